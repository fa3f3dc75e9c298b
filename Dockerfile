# One image for every Ray node of tuneserve: head, CPU workers and GPU workers.
#   docker build -t tuneserve:0.1.0 .                                      # CPU
#   docker build -t tuneserve-gpu:0.1.0 --build-arg VARIANT=gpu .          # GPU (CUDA)
# VARIANT picks both the Ray base image and the onnxruntime extra (`cpu` or `gpu`).
ARG RAY_VERSION=2.60.0
ARG VARIANT=cpu
FROM rayproject/ray:${RAY_VERSION}-py311-${VARIANT}

ARG VARIANT=cpu
# PyTorch's own index: its CPU wheels for the CPU image, CUDA wheels for the GPU one
ARG TORCH_INDEX_CPU=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX_GPU=https://download.pytorch.org/whl/cu128

# The image's own non-root user; its Python (conda) belongs to it, so pip needs no root.
USER ray
WORKDIR /home/ray/tuneserve

ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONUNBUFFERED=1 \
    TUNESERVE_HOME=/data/tuneserve

# Dependencies first, in a layer of their own: the project's metadata with empty packages,
# so that a change to the code does not reinstall torch and Ray.
COPY --chown=ray:users pyproject.toml README.md ./
RUN mkdir -p service training \
    && touch service/__init__.py training/__init__.py \
    && if [ "$VARIANT" = gpu ]; then index="$TORCH_INDEX_GPU"; else index="$TORCH_INDEX_CPU"; fi \
    && pip install --no-cache-dir torch==2.13.0 --index-url "$index" \
    && pip install --no-cache-dir "./[$VARIANT]"

# The code, installed over the placeholder without touching the dependencies.
COPY --chown=ray:users service/ service/
COPY --chown=ray:users training/ training/
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
    && python -c "import service.main, training.loop"

EXPOSE 8000 8265 6379 10001
