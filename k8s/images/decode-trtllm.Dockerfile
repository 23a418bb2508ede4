# The decode service on NVIDIA GPUs, on NVIDIA's TensorRT-LLM 1.2 release image (which brings
# tensorrt_llm, torch, CUDA and xgrammar 0.1.25). Build from the repo root:
#   docker build -f k8s/images/decode-trtllm.Dockerfile -t toolwire-decode:trtllm .
# Not built or run on this project's CI machines (no Docker engine, no GPU).
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt-llm/release:1.2.0
FROM ${BASE_IMAGE}
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY protos protos
COPY toolwire toolwire
COPY services services
COPY gateway gateway
# toolwire adds only what the image lacks: every package already installed is a constraint,
# so a conflict fails the build instead of replacing a version TensorRT-LLM was tested with
# (its xgrammar 0.1.25 stays; the engine takes constraints as grammars in that version's
# syntax). The build then checks that nothing changed and that pip check finds nothing new.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN pip freeze --all | grep -v -e ' @ ' -e '^-e ' | sort > /tmp/image.txt \
 && (pip check 2>&1 | grep -v '^No broken' | sort > /tmp/check-before.txt || true) \
 && pip install --no-cache-dir -c /tmp/image.txt grpcio-tools \
 && pip install --no-cache-dir --no-build-isolation -c /tmp/image.txt . \
 && pip freeze --all | grep -v -e ' @ ' -e '^-e ' | sort > /tmp/after.txt \
 && echo "packages the install changed (must be none):" \
 && ! comm -23 /tmp/image.txt /tmp/after.txt | grep . \
 && (pip check 2>&1 | grep -v '^No broken' | sort > /tmp/check-after.txt || true) \
 && echo "new pip check complaints (must be none):" \
 && ! comm -13 /tmp/check-before.txt /tmp/check-after.txt | grep . \
 && python -c "import tensorrt_llm, importlib.metadata as m; \
print('tensorrt_llm', tensorrt_llm.__version__, 'xgrammar', m.version('xgrammar'))"
# The same user as the Kubernetes manifests (runAsUser 65534); caches go to a writable home.
ENV HF_HUB_OFFLINE=1 HOME=/tmp/toolwire
USER 65534:65534
# gRPC health (open without the internal token); with TLS on the service, probe another way.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
  CMD ["toolwire", "health", "127.0.0.1:50062"]
ENTRYPOINT ["toolwire", "serve", "decode", "--engine", "trtllm", "--host", "0.0.0.0"]
