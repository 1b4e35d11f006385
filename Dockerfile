# The portal served by gunicorn. Configure it with PORTAL_* environment variables.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY portal ./portal
RUN pip install --no-cache-dir . && useradd --system --no-create-home portal
COPY settings.toml ./
# gunicorn's hooks: refuse several workers with per-process state; metrics of every worker.
COPY deploy/gunicorn.conf.py ./gunicorn.conf.py
USER portal
# Refuses the dev-only secrets of settings.toml: set PORTAL_SECRET_KEY, PORTAL_LDAP_BIND_PASSWORD.
ENV PORTAL_ENV=production
# One worker process with threads: sign-outs, revocations and throttle counts then live in one
# place even with the default SimpleCache. More workers (WEB_CONCURRENCY) need
# PORTAL_CACHE_TYPE='"RedisCache"' and PORTAL_CACHE_REDIS_URL; gunicorn refuses to start
# otherwise. Threads, because a failed login waits out LOGIN_FAILURE_FLOOR_MS.
ENV WEB_CONCURRENCY=1
EXPOSE 8000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "--threads", "8", "--bind", "0.0.0.0:8000", "--access-logfile", "-", "portal:create_app()"]
