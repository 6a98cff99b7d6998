#!/usr/bin/env bash
# Factory provisioning, offline, in one batch (see provisioning/README.md):
#   1. each device on the line generates its own key and a CSR   (the key never leaves the device)
#   2. the line controller collects the CSRs onto removable media  (only public data moves)
#   3. the offline fleet CA issues one certificate per CSR         (CA key stays on the CA host)
#   4. certificates + fleet CA certificate go back to each device, which checks and installs them
#   5. a QA step signs a test verdict on each device and verifies it with the fleet CA alone
#
# Here all "devices" are folders on one machine so the script runs anywhere:
#   bash provisioning/factory_batch.sh [WORKDIR] [COUNT] [PREFIX]
# On a real line, run step 1/4/5 on each device (over the service port) and step 3 on the CA host.
set -euo pipefail

WORK=${1:-$(mktemp -d -t edge-factory-XXXXXX)}
COUNT=${2:-3}
PREFIX=${3:-ct}
if command -v edge-agent >/dev/null 2>&1; then EA=(edge-agent); else EA=(python3 -m edge_agent.cli); fi
mkdir -p "$WORK"/{devices,outbox-csr,inbox-certs}
CA="$WORK/fleet-ca"

# 0. Once per fleet (vendor) or per site: the offline CA. Encrypt its key in production:
#    EDGE_AGENT_CA_PASSPHRASE=... or --passphrase-file on every `ca` command.
if [ ! -f "$CA/ca.pem" ]; then
  "${EA[@]}" ca init "$CA" --name "Acme Imaging Fleet CA"
fi

# 1. On each device: key + CSR (the serial number printed on the device becomes its id).
ids=()
for i in $(seq 1 "$COUNT"); do
  id=$(printf '%s-%04d' "$PREFIX" "$i")
  ids+=("$id")
  state="$WORK/devices/$id/state"
  if [ ! -f "$state/device.json" ]; then
    "${EA[@]}" enroll init --device-id "$id" --dir "$state"
  fi
  # 2. Collect the CSR (public) for the CA.
  cp "$state/device.csr" "$WORK/outbox-csr/$id.csr"
done

# 3. On the offline CA host: one certificate per CSR, at most a year.
for csr in "$WORK"/outbox-csr/*.csr; do
  id=$(basename "$csr" .csr)
  "${EA[@]}" ca issue --ca "$CA" "$csr" --out "$WORK/inbox-certs/$id.pem" --days 365
done
"${EA[@]}" ca crl --ca "$CA" --out "$WORK/inbox-certs/fleet-crl.pem"

# 4. Back on each device: install (refused unless it matches the device key and chains to the CA).
for id in "${ids[@]}"; do
  state="$WORK/devices/$id/state"
  "${EA[@]}" enroll install "$WORK/inbox-certs/$id.pem" --dir "$state" --fleet-ca "$CA/ca.pem"
  "${EA[@]}" enroll status --dir "$state" >/dev/null
done

# 5. QA: each device signs a test verdict; the fleet CA certificate alone verifies all of them.
qa="$WORK/qa-verdicts.jsonl"
: > "$qa"
for id in "${ids[@]}"; do
  echo '{"path":"factory-selftest","frame":null,"verdict":"unreadable","score":null,"threshold":null,"thresholds":null,"model":null,"reasons":[{"code":"selftest","message":"factory self-test"}],"timings_ms":{}}' \
    | "${EA[@]}" sign-verdicts --dir "$WORK/devices/$id/state" >> "$qa" 2>/dev/null
done
"${EA[@]}" verify "$qa" --trust "$CA/ca.pem" --crl "$WORK/inbox-certs/fleet-crl.pem"
echo "factory batch done: ${#ids[@]} device(s) in $WORK/devices, QA verdicts $qa"
