# One image for every Ray node of tuneserve: head, CPU workers and GPU workers.
#   docker build -t tuneserve:0.1.0 .                                            # CPU
#   docker build -t tuneserve-gpu:0.1.0 --build-arg VARIANT=gpu \
#     --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py311-gpu \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .           # GPU (CUDA)
# BASE_IMAGE is any image with the Ray image's contract: a non-root user `ray` whose Python
# 3.11 is on PATH and takes `pip install` (make image-test builds a stand-in from Debian where
# Ray's image cannot be pulled: deploy/image/standin.sh). VARIANT picks the onnxruntime extra.
# Behind a TLS-inspecting proxy, mount its CA bundle and name it in PIP_CERT; to install torch
# from a folder of wheels instead of PyTorch's index, mount it and name it in TORCH_FIND_LINKS
# (the Makefile's `image` target does both).
ARG RAY_VERSION=2.60.0
ARG BASE_IMAGE=rayproject/ray:${RAY_VERSION}-py311-cpu
FROM ${BASE_IMAGE}

ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
# PyTorch's own index (its CPU wheels for the CPU image; cu128 for the GPU one), or a folder
# of wheels: torch from there, only its dependencies from PyPI
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
ARG PIP_CERT=

# the store's folder, which a volume replaces on Kubernetes, belongs to the image's user
USER root
RUN mkdir -p /data/tuneserve && chown 1000:100 /data/tuneserve

# The image's own non-root user; its Python belongs to it, so pip needs no root.
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
# (pip reads PIP_CERT from the environment itself; an empty one is unset rather than passed)
# The bundled encoder's package requires sentence-transformers, and with it scikit-learn and
# SciPy (about 200 MB), for a loader of its own; tuneserve reads only its files.
RUN mkdir -p service training \
    && touch service/__init__.py training/__init__.py \
    && if [ -z "$PIP_CERT" ]; then unset PIP_CERT; fi \
    && if [ -n "$TORCH_FIND_LINKS" ]; then \
         pip install --no-cache-dir --no-index --no-deps --find-links "$TORCH_FIND_LINKS" \
           "torch==${TORCH_VERSION}" \
         && pip install --no-cache-dir "torch==${TORCH_VERSION}"; \
       else \
         pip install --no-cache-dir --index-url "$TORCH_INDEX" "torch==${TORCH_VERSION}"; \
       fi \
    && pip install --no-cache-dir "./[$VARIANT]" \
    && pip uninstall -y sentence-transformers scikit-learn scipy

# The code, installed over the placeholder without touching the dependencies.
COPY --chown=ray:users service/ service/
COPY --chown=ray:users training/ training/
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
    && python -c "import service.main, training.loop"

EXPOSE 8000 8265 6379 10001
