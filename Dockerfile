# syntax=docker/dockerfile:1
# meterline: one image for every role. The app is TypeScript that Node 24 runs directly (type stripping),
# so there is no compile step: the image holds src/, schemas/ and the production node_modules.
#
#   docker build -t meterline:0.1.0 .                      # node:24-bookworm-slim, npm ci in a build stage
#   deploy/image/build.sh                                  # without Docker or a registry (podman, local base)
#   deploy/image/smoke.sh                                  # the pipeline from the image, as the chart runs it
#
# BASE_IMAGE: the runtime base. It must have Node 24 as `node` on PATH.
ARG BASE_IMAGE=node:24-bookworm-slim
# DEPS: where the production node_modules come from.
#   npm-ci: a build stage runs `npm ci --omit=dev` in BASE_IMAGE (it needs npm and a shell, which
#           node:24-bookworm-slim has).
#   staged: deploy/image/build.sh ran the same `npm ci --omit=dev` on the build host into
#           deploy/image/.deps/ (its local base is a bare Node binary with no npm and no shell, so RUN
#           cannot work there). Every production dependency is plain JavaScript, with no native add-on,
#           so modules installed on the host run unchanged in the image.
ARG DEPS=npm-ci

FROM ${BASE_IMAGE} AS deps-npm-ci
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM scratch AS deps-staged
COPY deploy/image/.deps/node_modules /app/node_modules

FROM deps-${DEPS} AS deps

FROM ${BASE_IMAGE}
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY schemas/ ./schemas/
COPY src/ ./src/
# The optional topics Job of the Helm chart runs this (there is no meterline subcommand for it).
COPY deploy/image/create-topics.ts ./deploy/image/create-topics.ts
# The chart's `helm test` pod runs this: each role's health, Kafka and Redis reachable.
COPY deploy/image/helm-test.ts ./deploy/image/helm-test.ts
# Non-root, and nothing is written outside /tmp: the chart runs it with a read-only root filesystem.
USER 65532:65532
# The same flags as `npm run meterline`: the OpenTelemetry preload starts the SDK before anything else is
# loaded (it does nothing without OTEL_EXPORTER_OTLP_ENDPOINT). An 8 MB semi-space (V8's default on a large host,
# 64 MB, costs over 100 MB of RSS for no measurable speed) and a 768 MB heap: on a large host V8 lets the old
# generation grow to 4 times its live set before collecting; a 768 MB limit makes that about 1.5 times (the
# processor's live heap is about 65 MB at full speed), for the same CPU (deploy/bench, docs/performance.md).
# Two malloc arenas: glibc's default (one per thread that allocates, up to 8 per core) holds freed memory
# in each, tens of MB of RSS for nothing here.
ENV MALLOC_ARENA_MAX=2
ENTRYPOINT ["node", "--disable-warning=TimeoutNegativeWarning", "--max-semi-space-size=8", "--max-old-space-size=768", "--import", "./src/observability/otel-preload.ts", "src/cli/main.ts"]
CMD ["run"]
