# The decode service on NVIDIA GPUs, on NVIDIA's TensorRT-LLM release image (which brings
# tensorrt_llm, torch and CUDA). Build from the repo root:
#   docker build -f k8s/images/decode-trtllm.Dockerfile -t toolwire-decode:trtllm .
# Not built or run on this project's CI machines (no Docker engine, no GPU).
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt-llm/release:1.0.0
FROM ${BASE_IMAGE}
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY protos protos
COPY toolwire toolwire
COPY services services
COPY gateway gateway
# The image's own torch and tensorrt_llm stay; toolwire adds only what it lacks.
RUN pip install --no-cache-dir grpcio-tools && pip install --no-cache-dir --no-build-isolation .
ENV HF_HUB_OFFLINE=1
ENTRYPOINT ["toolwire", "serve", "decode", "--engine", "trtllm", "--host", "0.0.0.0"]
