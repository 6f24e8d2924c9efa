# wsgate container image (tag it wsgate:0.1.0; deploy/kubernetes/deployment.yaml uses that name).
#
#   podman build --format docker -t wsgate:0.1.0 .       # or: docker build -t wsgate:0.1.0 .
#   podman run --rm -v ./conf:/etc/wsgate:ro -e WSGATE_JWT_SECRET=... -p 8443:8443 wsgate:0.1.0
#
# Runtime contract:
#   /usr/local/bin/wsgate              the gateway (ENTRYPOINT); default CMD serves /etc/wsgate/wsgate.toml
#   wsgate healthcheck --config F      GET /healthz on the admin listener F names (admin.listen; 0.0.0.0
#                                      is checked on loopback), exit 0 on a 200: the HEALTHCHECK, no shell, no curl
#   /etc/wsgate                        config (mount a ConfigMap or a directory here, read-only is fine)
#   /var/lib/wsgate                    state_dir (revocations.jsonl), owned by 10001, a VOLUME
#   uid/gid 10001, no shell needed, runs with a read-only root filesystem and all capabilities dropped.
# The HEALTHCHECK reads the admin address from the mounted config (the Kubernetes probes need it
# on 0.0.0.0, deploy/kubernetes/configmap.yaml).
# `podman build` keeps HEALTHCHECK only with --format docker (the OCI format has no such field).
# RUN --mount=type=cache needs BuildKit (the default builder since Docker 23) or buildah/podman.
#
# Base images are build arguments, so an offline or mirrored build can point them at local images
# (scripts/container.sh builds both from Debian packages and runs this file end to end):
#   BUILDER_IMAGE: any Debian 12 (glibc 2.36) image with cargo/rustc >= 1.89 on PATH, gcc, libc6-dev,
#                  make; the cargo registry cache lives in /usr/local/cargo.
#   RUNTIME_IMAGE: any image with glibc >= 2.36 and libgcc_s (distroless cc has both, and no shell).
ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
ENV CARGO_HOME=/usr/local/cargo CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
RUN mkdir -p /out/usr/local/bin /out/etc/wsgate /out/var/lib/wsgate
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io downloads and the target dir between builds on one machine;
# the binary is copied out in the same step (the target mount is not part of the image).
RUN --mount=type=cache,id=wsgate-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=wsgate-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin wsgate \
 && install -m 0755 target/release/wsgate /out/usr/local/bin/wsgate

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="wsgate" \
      org.opencontainers.image.description="WebSocket security gateway: TLS, origin, JWT, per-message authorization, rate limits, validation, metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
COPY --from=build /out/etc/wsgate/ /etc/wsgate/
COPY --from=build --chown=10001:10001 /out/var/lib/wsgate/ /var/lib/wsgate/
USER 10001:10001
VOLUME ["/var/lib/wsgate"]
# 8443: public WebSocket listener ([server] listen); 9090: admin (/metrics, /healthz, /readyz).
EXPOSE 8443 9090
# SIGTERM starts the drain (timeouts.drain_seconds, 30 s by default): give `docker/podman stop`
# a longer --time than that, as Kubernetes gets terminationGracePeriodSeconds.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/wsgate", "healthcheck", "--config", "/etc/wsgate/wsgate.toml"]
ENTRYPOINT ["/usr/local/bin/wsgate"]
CMD ["serve", "--config", "/etc/wsgate/wsgate.toml"]
