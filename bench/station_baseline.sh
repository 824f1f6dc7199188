#!/usr/bin/env bash
# The same work as `persoflow demo`'s first batch, done the way a user would without persoflow,
# given its best setup (persoflow-bench station runs it): one SoftHSM2 store per card (made
# before the clock starts), an `openssl ca` with index.txt and serial behind a flock (it has no
# locking of its own), and per card: EC P-256 key generated on the card (pkcs11-tool), a CSR signed
# on the card (openssl req with the pkcs11 engine), `openssl ca`, the certificate written to the
# card (pkcs11-tool), a new random user PIN set.
#   station_baseline.sh WORKDIR CARDS serial|parallel   -> prints the seconds of the timed part
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/baseline_ca.sh"
W=$1; N=$2; MODE=$3
M=/usr/lib/softhsm/libsofthsm2.so
mkdir -p "$W"; cd "$W"

# Untimed setup: the CA and the cards.
baseline_ca 730 clientAuth
for i in $(seq 1 "$N"); do
  d=$W/card$i; mkdir -p "$d/tokens"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$d/tokens" > "$d/softhsm2.conf"
  SOFTHSM2_CONF=$d/softhsm2.conf softhsm2-util --init-token --free --label "card$i" --pin 123456 --so-pin 12345678 >/dev/null
done

card() {
  local i=$1 d=$W/card$1
  export SOFTHSM2_CONF=$d/softhsm2.conf
  pkcs11-tool --module $M --token-label "card$i" --login --pin 123456 --keypairgen \
    --key-type EC:prime256v1 --id 01 --label key >/dev/null 2>&1
  openssl req -new -engine pkcs11 -keyform engine \
    -key "pkcs11:token=card$i;id=%01;type=private;pin-value=123456" \
    -subj "/CN=Card $i/O=baseline" -out "$d/req.pem" 2>/dev/null
  flock "$W/ca.lock" openssl ca -batch -config "$W/ca.cnf" -in "$d/req.pem" -out "$d/cert.pem" \
    -notext 2>/dev/null
  openssl x509 -in "$d/cert.pem" -outform DER -out "$d/cert.der"
  pkcs11-tool --module $M --token-label "card$i" --login --pin 123456 --write-object "$d/cert.der" \
    --type cert --id 01 --label cert >/dev/null 2>&1
  local pin; pin=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ' | cut -c1-8)
  pkcs11-tool --module $M --token-label "card$i" --login --pin 123456 --change-pin \
    --new-pin "$pin" >/dev/null 2>&1
}

start=$(date +%s.%N)
if [ "$MODE" = parallel ]; then
  for i in $(seq 1 "$N"); do card "$i" & done
  wait
else
  for i in $(seq 1 "$N"); do card "$i"; done
fi
end=$(date +%s.%N)
issued=$(grep -c '^V' index.txt)
[ "$issued" = "$N" ] || { echo "only $issued of $N certificates issued" >&2; exit 1; }
awk "BEGIN { printf \"%.3f\\n\", $end - $start }"
