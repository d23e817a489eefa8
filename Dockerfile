# One image for web, workers and beat. torch comes from PyPI with its CUDA runtime, and the
# host provides the NVIDIA driver to the GPU worker.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 arpad

WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY arpad ./arpad
COPY annotation ./annotation
COPY accounts ./accounts
COPY exports ./exports
COPY jobs ./jobs
COPY rewardmodel ./rewardmodel
COPY rlloop ./rlloop
COPY trainio ./trainio
COPY frontend ./frontend
COPY manage.py ./

# The ml extra (torch, transformers, peft) is in the one image: the GPU worker trains with it
# and web scores with it (the scoring API).
ARG EXTRAS="ml"
RUN pip install -c requirements.lock ".${EXTRAS:+[$EXTRAS]}"

# Static files are collected at build time; the settings need a key to import, not a real one.
RUN DJANGO_SECRET_KEY=collectstatic-only DJANGO_ALLOWED_HOSTS=localhost DJANGO_STATIC_ROOT=/app/static \
    python manage.py collectstatic --noinput -v 0

ENV DJANGO_STATIC_ROOT=/app/static \
    ARTIFACT_ROOT=/artifacts
RUN mkdir -p /artifacts && chown arpad:arpad /artifacts
USER arpad
EXPOSE 8000
CMD ["gunicorn", "arpad.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "4", "--access-logfile", "-"]
