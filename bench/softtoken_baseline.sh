#!/usr/bin/env bash
# The soft-token work of `persoflow softtoken issue`, done the way a user would without persoflow
# (persoflow-bench softtoken runs it): per token a key and CSR (`openssl req -newkey`), the
# certificate (`openssl ca`, index.txt and serial behind a flock: it has no locking of its own),
# and the PKCS#12 with the CA chain (`openssl pkcs12 -export`, AES-256-CBC, PBKDF2 with the same
# iteration count for both bags and the MAC, a random 8-digit password).
#   softtoken_baseline.sh WORKDIR TOKENS ITERATIONS p256|rsa2048 serial|parallel
#   -> prints the seconds of the timed part
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/baseline_ca.sh"
W=$1; N=$2; ITER=$3; ALG=$4; MODE=$5
mkdir -p "$W"; cd "$W"
case "$ALG" in
  p256) NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa2048) NEWKEY=(-newkey rsa:2048) ;;
  *) echo "ALG must be p256 or rsa2048" >&2; exit 2 ;;
esac

# Untimed setup: the CA.
baseline_ca 365 clientAuth,emailProtection
mkdir -p tokens

token() {
  local i=$1 d=$W/tokens/t$1
  mkdir -p "$d"
  openssl req -new "${NEWKEY[@]}" -nodes -keyout "$d/key.pem" -subj "/CN=Token $i/O=baseline" \
    -out "$d/req.pem" 2>/dev/null
  flock "$W/ca.lock" openssl ca -batch -config "$W/ca.cnf" -in "$d/req.pem" -out "$d/cert.pem" \
    -notext 2>/dev/null
  openssl x509 -in "$d/cert.pem" -outform DER -out "$d/cert.der"
  local pin; pin=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ' | cut -c1-8)
  openssl pkcs12 -export -inkey "$d/key.pem" -in "$d/cert.pem" -certfile "$W/ca.pem" \
    -keypbe AES-256-CBC -certpbe AES-256-CBC -macalg sha256 -iter "$ITER" \
    -passout "pass:$pin" -out "$d/token.p12"
  rm -f "$d/key.pem"
}

start=$(date +%s.%N)
if [ "$MODE" = parallel ]; then
  # One job per core: more would only queue behind PBKDF2.
  for i in $(seq 1 "$N"); do
    token "$i" &
    if (( i % $(nproc) == 0 )); then wait; fi
  done
  wait
else
  for i in $(seq 1 "$N"); do token "$i"; done
fi
end=$(date +%s.%N)
issued=$(grep -c '^V' index.txt)
[ "$issued" = "$N" ] || { echo "only $issued of $N certificates issued" >&2; exit 1; }
awk "BEGIN { printf \"%.3f\\n\", $end - $start }"
