# The shell baselines' CA (sourced by softtoken_baseline.sh and station_baseline.sh, untimed):
# an EC P-256 CA in the current directory $W and an `openssl ca` configuration ca.cnf for leaf
# certificates, with index.txt and serial (the callers put `openssl ca` behind a flock: it has no
# locking of its own).
#   baseline_ca DAYS EXTENDED_KEY_USAGE
baseline_ca() {
  local days=$1 eku=$2
  openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem 2>/dev/null
  openssl req -new -x509 -key ca-key.pem -subj "/CN=Baseline CA" -days 3650 -out ca.pem
  mkdir -p newcerts; : > index.txt; echo 01 > serial
  cat > ca.cnf <<CNF
[ ca ]
default_ca = base
[ base ]
dir = $W
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
certificate = \$dir/ca.pem
private_key = \$dir/ca-key.pem
serial = \$dir/serial
default_md = sha256
default_days = $days
policy = anything
unique_subject = no
copy_extensions = none
x509_extensions = ext
[ anything ]
CN = supplied
O = optional
[ ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = $eku
CNF
}
