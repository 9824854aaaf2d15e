#!/usr/bin/env bash
# Builds the Lambda functions for arm64 (provided.al2023) as zips with
# cargo-lambda (pinned, with ziglang as the cross linker, in
# .agentrun/venv-package) and puts them where Terraform looks:
# target/lambda/<function>/bootstrap.zip. Prints each zip's size.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_LAMBDA_VERSION=1.9.2
ZIGLANG_VERSION=0.14.1
venv=.agentrun/venv-package
if [ ! -x "$venv/bin/cargo-lambda" ]; then
  echo "installing cargo-lambda==$CARGO_LAMBDA_VERSION and ziglang==$ZIGLANG_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIGLANG_VERSION"
fi
export PATH="$PWD/$venv/bin:$PATH"
rustup target add aarch64-unknown-linux-gnu >/dev/null
# A target directory of its own, so packaging does not wait on (or evict)
# the debug builds.
export CARGO_TARGET_DIR="$PWD/target/package"
functions=(agentrun-api agentrun-step agentrun-finalize agentrun-sse-relay)
packages=()
for name in "${functions[@]}"; do packages+=(-p "$name"); done
start=$(date +%s)
cargo lambda build --release --arm64 --output-format zip "${packages[@]}"
for name in "${functions[@]}"; do
  mkdir -p "target/lambda/$name"
  cp "$CARGO_TARGET_DIR/lambda/$name/bootstrap.zip" "target/lambda/$name/bootstrap.zip"
  printf '%-22s %8d KiB\n' "$name" $(( $(stat -c %s "target/lambda/$name/bootstrap.zip") / 1024 ))
done
echo "packaged in $(( $(date +%s) - start )) s"
