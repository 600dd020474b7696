#!/usr/bin/env bash
# Rate deploy/systemd/wardhook.service with `systemd-analyze security --offline=true` and fail
# when the overall exposure level is above the threshold (default 2.0, "OK").
#
# Usage: deploy/ci/check-systemd-security.sh [UNIT_FILE] [THRESHOLD]
# Needs systemd-analyze from systemd 252 or newer (--offline= appeared in 252).
set -euo pipefail
cd "$(dirname "$0")/../.."

unit="${1:-deploy/systemd/wardhook.service}"
threshold="${2:-2.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-systemd-security: systemd-analyze not found (install systemd >= 252)" >&2
    exit 2
fi

# --offline=true: judge the unit file itself, without a running systemd or installed binary.
# The report is printed in full so a failure shows which settings cost points.
if ! report="$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1)"; then
    # systemd-analyze exits non-zero when it cannot parse the unit; show why.
    printf '%s\n' "$report" >&2
    echo "check-systemd-security: systemd-analyze failed on $unit" >&2
    exit 1
fi

# Last line: "→ Overall exposure level for wardhook.service: 1.1 OK 🙂"
score="$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\.[0-9]\).*/\1/p' | tail -n 1)"
if [[ -z "$score" ]]; then
    printf '%s\n' "$report" >&2
    echo "check-systemd-security: could not find the overall exposure level in the report" >&2
    exit 1
fi

if awk -v s="$score" -v t="$threshold" 'BEGIN { exit !(s > t) }'; then
    printf '%s\n' "$report" | grep '✗' >&2 || true
    echo "check-systemd-security: $unit exposure $score is above $threshold" >&2
    exit 1
fi
echo "check-systemd-security: $unit exposure $score (threshold $threshold): ok"
