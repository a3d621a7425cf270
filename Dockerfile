# syntax=docker/dockerfile:1
#
# privacy-filter GPU deployment image: CUDA 12 runtime + CuPy kernels + TensorRT (Python wheels)
# + ONNX Runtime, entrypoint `privacy-filter`.
#
# NOT BUILT IN THIS PROJECT'S CI: the machines that develop and test privacy-filter have no
# Docker engine and no GPU, and cannot reach NVIDIA's package index.  This file follows the
# documented install steps (README "GPU deployment"); treat its first build as untested.
#
#   docker build -t privacy-filter:gpu .
#   docker run --rm --gpus all -v $PWD:/data -v pf-cache:/cache privacy-filter:gpu \
#       engine build peoplesemsegnet-shuffleseg:/data/peoplesemsegnet_shuffleseg.onnx --out /data/pssn.engine
#   docker run --rm --gpus all -v $PWD:/data -v pf-cache:/cache privacy-filter:gpu \
#       process /data/in.mp4 /data/out.mp4 --preset cctv --device cuda --model /data/pssn.engine
#
# Build arguments:
#   TENSORRT_PACKAGE  pip requirement for TensorRT.  Default: the 10.x line, which still has the
#                     FP16 builder flag and INT8 calibration caches (NVIDIA's PeopleSemSegNet
#                     caches).  "tensorrt-cu12>=11,<12" selects 11.x (strong typing only: FP16
#                     via ModelOpt AutoCast, INT8 via Q/DQ ONNX).  Engines only load in the exact
#                     TensorRT version that built them, so build engines inside this image.
#   PULL_DEFAULT_MODEL  1 (default): fetch and convert the embedded selfie model at build time,
#                     so containers need no network at run time.

ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS runtime

ARG TENSORRT_PACKAGE="tensorrt-cu12>=10.3,<11"
ARG PULL_DEFAULT_MODEL=1

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/privacy-filter \
    PATH=/opt/privacy-filter/bin:$PATH \
    PRIVACY_FILTER_CACHE_DIR=/cache \
    CUPY_CACHE_DIR=/cache/cupy \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,video
# `video`: the NVIDIA container runtime then mounts the driver's NVENC/NVDEC libraries
# (libnvidia-encode, libnvcuvid); the CUDA base images ask only for compute,utility.

# Python 3.12 (Ubuntu 24.04), in a virtualenv (PEP 668).  PyAV wheels bundle FFmpeg (with
# NVENC/NVDEC, which use the driver libraries the NVIDIA container runtime mounts).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv "$VIRTUAL_ENV" \
 && pip install --upgrade pip

WORKDIR /src
COPY pyproject.toml README.md ./
COPY plugin ./plugin
COPY kernels ./kernels
COPY configs ./configs

# The project with its GPU extra (CuPy for CUDA 12) and NVRTC for the run-time kernel compile,
# then TensorRT from NVIDIA's index (the PyPI packages of that name are stubs that fetch from it).
RUN pip install ".[gpu]" "nvidia-cuda-nvrtc-cu12>=12" \
 && pip install --extra-index-url https://pypi.nvidia.com "${TENSORRT_PACKAGE}" \
 && python -c "import tensorrt, cupy, privacy_filter; print('TensorRT', tensorrt.__version__, '| CuPy', cupy.__version__)"

# Unprivileged user; /cache holds the converted default model, TensorRT timing caches and CuPy's
# compiled kernels (mount a volume there to keep them across containers).
RUN useradd --system --uid 10001 --create-home --home-dir /home/pf pf \
 && mkdir -p /cache /data \
 && chown -R pf:pf /cache /data
USER pf
RUN if [ "$PULL_DEFAULT_MODEL" = "1" ]; then privacy-filter models pull; fi

WORKDIR /data
VOLUME ["/cache"]
ENTRYPOINT ["privacy-filter"]
CMD ["--help"]
