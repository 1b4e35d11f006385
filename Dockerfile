# The portal served by gunicorn. Configure it with PORTAL_* environment variables.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY portal ./portal
RUN pip install --no-cache-dir . && useradd --system --no-create-home portal
COPY settings.toml ./
USER portal
# Refuses the dev-only secrets of settings.toml: set PORTAL_SECRET_KEY, PORTAL_LDAP_BIND_PASSWORD.
ENV PORTAL_ENV=production
EXPOSE 8000
# Threads: a failed login waits out LOGIN_FAILURE_FLOOR_MS, which must not hold a whole worker.
CMD ["gunicorn", "--workers", "2", "--threads", "4", "--bind", "0.0.0.0:8000", "--access-logfile", "-", "portal:create_app()"]
