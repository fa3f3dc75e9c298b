"""The service's one settings object, read from `TUNESERVE_*` environment variables.

Built once at start (`Settings()` in the CLI or `build_app`) and passed down as plain values;
nothing else reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

MASK = "***"  # a password left out of a database URL (Settings.shared_db_url)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNESERVE_", extra="ignore")

    home: Path = Field(
        Path(".tuneserve"), description="artifact root: uploaded files, checkpoints, models"
    )
    host: str = Field("127.0.0.1", description="address the HTTP proxy binds")
    port: int = Field(8000, ge=1, le=65535)
    ray_address: str | None = Field(
        None, description="an existing Ray cluster to join; unset starts a local one"
    )

    # the base encoder: `base` in every request resolves to this model id in the store
    base_model: str = "base"

    # model replicas
    model_replicas: int = Field(1, ge=1, description="replicas of the model deployment")
    autoscaling_max_replicas: int = Field(
        0, ge=0, description="above model_replicas: autoscale between the two; 0: fixed"
    )
    autoscaling_target_ongoing: float = Field(
        8.0, gt=0, description="ongoing requests per replica that autoscaling aims for"
    )
    direct_ingress: bool = Field(
        True,
        description="`tuneserve run` on a local Ray: the ingress replica answers on `port` "
        "itself, without Serve's proxy actor in the path",
    )
    model_replica_cpus: float = Field(1.0, ge=0, description="Ray CPUs reserved per replica")
    model_replica_gpus: float = Field(
        0.0, ge=0, description="Ray GPUs reserved per replica (a fraction shares one GPU)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where replicas run models: auto takes ONNX Runtime's CUDA provider where "
        "onnxruntime-gpu sees a GPU, else the CPU; cpu forces the CPU",
    )
    precision_budget: float = Field(
        1.0,
        ge=0,
        le=100,
        description="points of validation accuracy or F1 the faster precision (int8 on CPU, "
        "fp16 on GPU) may lose against fp32 and still be served",
    )
    min_encoder_cosine: float = Field(
        0.95, ge=0, le=1, description="... for an encoder: its minimum cosine to PyTorch's"
    )
    ort_threads: int = Field(
        1, ge=1, description="ONNX Runtime intra-op threads per replica (one replica per core)"
    )
    tokenizer_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="threads of the fast tokenizer's pool per model replica (default: "
        "ort_threads, the replica's share of the cores; the tokenizer's own default is every "
        "core of the node)",
    )
    max_models_per_replica: int = Field(4, ge=1, description="LRU size of loaded models")
    model_calls_in_flight: int | None = Field(
        None,
        ge=1,
        le=256,
        description="calls the ingress has out to the model replicas per encoder and endpoint "
        "(requests arriving meanwhile travel together in the next); default 2 a replica",
    )
    max_heads_per_replica: int = Field(
        10_000, ge=1, description="head-only variants a replica keeps loaded (LRU by count)"
    )
    max_head_mib_per_replica: int = Field(
        256, ge=1, description="... and by the MiB their heads take"
    )
    max_batch_tokens: int = Field(
        4096, ge=64, description="one ONNX Runtime call runs at most this many (padded) tokens"
    )
    batch_tokens: int = Field(
        65536, ge=1024, description="requests batched together, in estimated tokens"
    )
    batch_wait_s: float = Field(
        0.0,
        ge=0,
        le=1,
        description="a batch waits this long for more requests before it runs; 0: a request "
        "that finds its replica idle runs at once, and those arriving meanwhile form the next batch",
    )
    model_max_ongoing: int = Field(
        32, ge=1, description="requests a model replica works on at once (batched together)"
    )
    ingress_max_ongoing: int = Field(
        1024, ge=1, description="requests the ingress handles at once (it only awaits models)"
    )
    ingress_max_queued: int = Field(
        4096, ge=1, description="requests waiting at the ingress; more get Ray's own 503"
    )
    model_max_queued: int = Field(
        256, ge=1, description="requests waiting for a model replica; more are refused with 503"
    )

    # request limits (each refused with a 4xx naming the field; the schema's are the ceiling)
    max_request_bytes: int = Field(
        2**20, ge=1024, description="largest JSON request body (uploads: max_upload_bytes)"
    )
    max_inputs: int = Field(64, ge=1, le=1024, description="texts (or QA pairs) a request")
    max_text_chars: int = Field(
        10_000, ge=1, le=100_000, description="characters of a text, question or context"
    )
    max_labels: int = Field(32, ge=2, le=256, description="candidate labels a request")

    # the job service
    database_url: str | None = Field(
        None,
        repr=False,
        description="SQLAlchemy URL (postgresql+psycopg://...); unset: SQLite under home",
    )
    max_upload_bytes: int = Field(
        512 * 2**20,
        ge=1,
        le=1023 * 2**20,
        description="largest accepted upload (below the 1 GiB a gRPC message may carry)",
    )
    max_running_jobs: int = Field(1, ge=1, description="jobs training at once; more queue")
    jobs_poll_s: float = Field(1.0, gt=0, le=60, description="how often jobs are followed")
    jobs_address: str | None = Field(
        None,
        description="Ray Jobs address (http://<head>:8265); unset: the cluster the service is in",
    )
    job_workers: int = Field(1, ge=1, description="Ray Train workers a job gets by default")
    job_cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each training worker takes")
    max_jobs_per_tenant: int = Field(
        4, ge=1, description="unfinished jobs (validating, queued, running) a tenant may have"
    )
    max_tenant_models: int = Field(
        100,
        ge=1,
        description="fine-tuned models a tenant may keep, its unfinished jobs counted as theirs "
        "(a full variant takes about 231 MB on disk, a head-only one kilobytes)",
    )

    # API keys (service/auth.py): set, or any key in the database, and every /v1/ call needs
    # one. Never logged; the ingress receives only its SHA-256.
    admin_key: str | None = Field(
        None, repr=False, description="the key that manages API keys (a Kubernetes Secret)"
    )

    job_use_gpu: bool = Field(
        False, description="jobs that do not say `scaling.use_gpu` train on GPUs (one a worker)"
    )
    # what one job may ask for (a request beyond is refused naming the field)
    max_job_workers: int = Field(8, ge=1, description="training workers a job may ask for")
    max_job_gpus: int = Field(8, ge=0, description="GPUs a job may ask for (one a worker)")
    max_job_epochs: float = Field(20, gt=0, description="epochs a job may ask for")

    # uploads: bounded as they stream, and checked in a process of their own
    max_decompressed_bytes: int = Field(
        2 * 2**30, ge=1024, description="a gzip upload's size once decompressed"
    )
    max_line_chars: int = Field(
        1_000_000, ge=100, description="characters of one line of an upload (JSON Lines, text)"
    )
    validation_timeout_s: float = Field(
        600, gt=0, description="seconds an upload's check may take before it is refused"
    )
    # per tenant
    max_tenant_bytes: int = Field(
        10 * 2**30, ge=1, description="bytes of uploaded files a tenant may keep"
    )
    max_tenant_files: int = Field(100, ge=1, description="uploaded files a tenant may keep")

    # time limits: a call that hangs is answered, never held
    request_timeout_s: float = Field(
        900, gt=0, description="Serve's limit on one HTTP request, uploads included"
    )
    model_call_timeout_s: float = Field(
        60, gt=0, description="seconds the ingress waits for a model replica's answer"
    )

    # the job runner
    min_event_interval_s: float = Field(
        2.0, ge=0, description="a job's progress is recorded at most this often"
    )
    max_follow_errors: int = Field(
        10, ge=1, description="ticks in a row that may fail to follow a job before it fails"
    )
    sweep_after_s: float = Field(
        3600, gt=0, description="leftovers of a crash (staging folders) older than this go"
    )

    @field_validator("home")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        # Ray workers do not share the driver's working directory: pass an absolute path.
        return v.expanduser().resolve()

    @classmethod
    def from_args(cls, args: dict) -> Settings:
        """Settings from an application's `args` (serve_config.yaml's) as defaults, each
        overridden by its TUNESERVE_* variable where one is set; unknown args are refused."""
        unknown = sorted(set(args) - set(cls.model_fields))
        if unknown:
            raise ValueError(
                f"unknown application args {unknown}; valid: {sorted(cls.model_fields)}"
            )
        in_env = {k.upper() for k in os.environ}
        return cls(**{k: v for k, v in args.items() if f"TUNESERVE_{k.upper()}" not in in_env})

    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'tuneserve.db'}"

    def shared_db_url(self) -> str:
        """The database URL deployments are given: its password, if any, masked. Serve's
        controller keeps deployment arguments (in Ray's GCS, shown by its dashboard), so a
        replica reads the password from its own TUNESERVE_DATABASE_URL (replica_db_url)."""
        url = make_url(self.db_url())
        if url.password is None:
            return self.db_url()
        return url.set(password=MASK).render_as_string(hide_password=False)

    def app_args(self) -> dict:
        """The plain values `service.main.build_app` takes (and serve_config.yaml carries)."""
        return self.model_dump(mode="json")


def replica_db_url(shared: str) -> str:
    """In a replica: the full database URL for one `Settings.shared_db_url` gave, its password
    read from this process's TUNESERVE_DATABASE_URL (a Kubernetes Secret sets it on every pod;
    `tuneserve run` puts it in its local Ray's environment)."""
    url = make_url(shared)
    if url.password != MASK:
        return shared
    full = os.environ.get("TUNESERVE_DATABASE_URL")
    if full and make_url(full).set(password=MASK) == url:
        return full
    raise RuntimeError(
        f"the database URL {url.render_as_string()} has a password, and this Ray process's "
        "environment lacks it: set TUNESERVE_DATABASE_URL to the full URL on every Ray node "
        "(on Kubernetes, from the Secret tuneserve-database), not only where the app is built"
    )


def replica_admin_hash(passed: str | None) -> str | None:
    """In the ingress: the admin key's SHA-256, as the application's builder passed it, else
    from this process's own TUNESERVE_ADMIN_KEY. Serve may build the application on any node,
    and on Kubernetes only the head pod, where the ingress runs, holds the key."""
    import hashlib

    if passed:
        return passed
    key = os.environ.get("TUNESERVE_ADMIN_KEY")
    return hashlib.sha256(key.encode()).hexdigest() if key else None
