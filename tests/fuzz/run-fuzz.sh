#!/usr/bin/env bash
# Runs one libFuzzer target for a few seconds over its seed corpus (kept
# read-only) plus a scratch dir for what it discovers. Usage: EXE CORPUS SECONDS
set -euo pipefail
exe=$(realpath "$1") corpus=$(realpath -m "$2") secs=$3
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$corpus"
cd "$scratch"
exec "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$scratch/" "$scratch" "$corpus"
