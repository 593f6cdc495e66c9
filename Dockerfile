# syntax=docker/dockerfile:1
#
# One image for every command of the project: the connector runtime
# (`connector worker`, `connector streams provision`, ...) and the example
# systems (`shop`, `catalog`). Pick one with the container command, e.g.
# `docker run IMAGE connector worker` or `docker run IMAGE shop`.
#
#   docker build -t connector:dev .
#
# Binaries are static (CGO_ENABLED=0) and the final stage is distroless
# (CA certificates, /etc/passwd, no shell) running as the nonroot user
# (uid/gid 65532).

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Dependencies first, so that source edits reuse this layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
# Builds every main package under cmd/ and examples/ into /out (connector,
# shop, catalog, ...): an example added later is picked up without editing
# this file. ./cmd/connector is named explicitly so that its absence fails.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    mkdir -p /out && \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w" \
        -o /out/ ./cmd/connector ./cmd/... ./examples/... && \
    test -x /out/connector

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
# Health, readiness and Prometheus metrics of `connector worker`.
EXPOSE 8080
CMD ["connector", "worker"]
