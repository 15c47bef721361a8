# syntax=docker/dockerfile:1
# Build stage: compile wheels into a virtualenv; the runtime stage gets only the venv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    STATIC_ROOT=/app/staticfiles \
    MEDIA_ROOT=/data/media
RUN useradd --create-home --uid 10001 kindred \
 && mkdir -p /data/media \
 && chown kindred:kindred /data/media
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=kindred:kindred . /app
# collectstatic needs settings but no secret worth keeping and no database.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0
USER kindred
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2)"
CMD ["gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"]
