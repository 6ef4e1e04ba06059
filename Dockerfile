# rtseg-farm: the profiler server and the host-CPU phone-agent share this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# adb for agents with phones attached over USB (the host-CPU agent does not need it)
RUN apt-get update && apt-get install -y --no-install-recommends adb && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# CPU-only torch first: the default index would pull the multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY profiler_server ./profiler_server
COPY android_harness ./android_harness
COPY search_client ./search_client
RUN pip install '.[postgres]'

EXPOSE 8000
VOLUME ["/data"]
CMD ["profiler-server", "--host", "0.0.0.0", "--port", "8000", "--data", "/data"]
