#!/usr/bin/env bash
# Headless latency-aware search on a real dataset against a remote profiler service.
# Safe to kill at any moment: rerunning the same command resumes the run from runs/<name>/
# (finished phases are skipped; the phase in progress restarts from its last checkpoint).
#
#   DATA=/data/cityscapes SERVER=http://farm.lab:8000 TOKEN=... DEVICE_CLASS='SM-G991B/lahaina' \
#   TARGET_MS=60 NPROC=8 scripts/overnight.sh
#
# Every knob below can be overridden from the environment. Logs go to runs/<name>/overnight.log.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DATA:?set DATA to the dataset root (Cityscapes layout: leftImg8bit/, gtFine/)}"
: "${SERVER:?set SERVER to the profiler service URL, e.g. http://farm.lab:8000}"
: "${DEVICE_CLASS:?set DEVICE_CLASS to the target device class (see GET /v1/predictors)}"
NAME="${NAME:-overnight-$(echo "$DEVICE_CLASS" | tr -c 'A-Za-z0-9\n' '_')}"
RUNTIME="${RUNTIME:-onnxruntime}"
PRESET="${PRESET:-cityscapes-paper}"
DATASET="${DATASET:-cityscapes}"
TOKEN="${TOKEN:-${RTSEG_TOKEN:-}}"
RETRIES="${RETRIES:-3}"          # restarts after a crash (a kill by the user is not retried)
PY="${PY:-.venv/bin}"
DEVICE="${DEVICE:-auto}"         # auto: cuda when available
NPROC="${NPROC:-1}"              # processes of one DDP job (one GPU each); more than 1 runs under torchrun

args=(run --name "$NAME" --dataset "$DATASET" --data-root "$DATA" --preset "$PRESET"
      --device-class "$DEVICE_CLASS" --runtime "$RUNTIME" --server "$SERVER" --device "$DEVICE")
[[ -n "$TOKEN" ]] && args+=(--token "$TOKEN")
[[ -n "${TARGET_MS:-}" ]] && args+=(--target-ms "$TARGET_MS")
[[ -n "${EXTRA_ARGS:-}" ]] && read -r -a extra <<<"$EXTRA_ARGS" && args+=("${extra[@]}")

launcher=("$PY/rtseg-search")
[[ "$NPROC" -gt 1 ]] && launcher=("$PY/torchrun" --standalone --nproc-per-node "$NPROC" -m search_client.cli)

mkdir -p "runs/$NAME"
log="runs/$NAME/overnight.log"
for attempt in $(seq 0 "$RETRIES"); do
  echo "[$(date -u +%FT%TZ)] attempt $attempt: rtseg-search ${args[*]/$TOKEN/***}" | tee -a "$log"
  set +e
  "${launcher[@]}" "${args[@]}" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc -eq 0 ]]; then
    echo "[$(date -u +%FT%TZ)] done: runs/$NAME/report.json" | tee -a "$log"
    exit 0
  fi
  # 130/143: interrupted on purpose (Ctrl-C / kill): stop here; rerun this script to resume.
  # 2 on the first attempt: the preflight or a flag is wrong (one line above says what); a retry won't fix it.
  if [[ $rc -eq 2 && $attempt -eq 0 ]]; then exit 2; fi
  if [[ $rc -eq 130 || $rc -eq 143 ]]; then exit "$rc"; fi
  # 4: the run finished but its measured latency missed the target (report.md says by how much).
  if [[ $rc -eq 4 ]]; then echo "[$(date -u +%FT%TZ)] finished, target missed: runs/$NAME/report.md" | tee -a "$log"; exit 4; fi
  echo "[$(date -u +%FT%TZ)] exit $rc; resuming in 30 s" | tee -a "$log"
  sleep 30
done
echo "gave up after $RETRIES restarts; see $log" >&2
exit 1
