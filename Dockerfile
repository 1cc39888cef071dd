# One image for every service of docker-compose.yml: the project, its dependencies and its
# console scripts (celery, kraken-pay: kraken_pay_cli), run as an unprivileged user.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The locked versions first (requirements/lock.txt, `make lock`): the image never resolves
# versions at build time, and this layer is rebuilt only when the lock changes.
COPY requirements/lock.txt requirements/lock.txt
RUN pip install -r requirements/lock.txt
# What pyproject.toml packages, and nothing else (.dockerignore keeps kraken.env out).
COPY pyproject.toml README.md celeryconfig.py ./
COPY kraken ./kraken
COPY tasks ./tasks
COPY kraken_pay_cli ./kraken_pay_cli
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 kraken

USER kraken
# celeryconfig.py (the standalone fleet's settings) is not installed: Celery finds it here, in
# the working directory.
WORKDIR /app
CMD ["celery", "-A", "tasks", "worker", "--loglevel=INFO"]
