# fetchall in a small image: build with the Rust toolchain, run on distroless (glibc, CA
# certificates, no shell). Used by deploy/kubernetes/. CI does not build this image (no
# container engine there); see docs/scale-out.md.
#   docker build -t fetchall:latest .
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin fetchall \
 && cp target/release/fetchall /fetchall

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /fetchall /usr/local/bin/fetchall
USER nonroot
ENTRYPOINT ["/usr/local/bin/fetchall"]
