# One image for every llmpool process (worker, beat, api, flower, mock-llm); docker-compose.yml
# picks the command. Build: docker build -t llmpool .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin llmpool \
    && mkdir -p /home/llmpool/data \
    && chown llmpool:llmpool /home/llmpool/data

# Non-root; the only writable place it needs is its data dir (beat's schedule file).
USER llmpool
WORKDIR /home/llmpool
ENV AGENT_DATA_DIR=/home/llmpool/data

EXPOSE 8080 5555 7000 7100
CMD ["llmpool", "check-config"]
