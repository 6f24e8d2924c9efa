# The gateway config of the benchmarks (loadtest/compare.sh, scripts/callgrind.sh): one
# worker, limits out of the way, three routes on the same echo upstream — /ws with the full
# message pipeline (JSON envelope, a type with a scope and a JSON Schema), /raw with
# `envelope = "none"`, /guarded like /ws plus the sensitive-data guard's default pack (every
# built-in rule, action log, both directions). `source` it, then:
#   bench_gateway_config PUBLIC_ADDR ADMIN_ADDR SECRET_ENV ECHO_PORT SCHEMA_FILE > wsgate.toml
# bench_full_route PATH ECHO_PORT SCHEMA_FILE: a route with the full message pipeline.
bench_full_route() {
  cat <<CONF
[[routes]]
path = "$1"
upstream = "ws://127.0.0.1:$2/"
allow_missing_origin = true
[[routes.messages]]
type = "chat.send"
scope = "chat:write"
schema_file = "$3"
CONF
}

bench_gateway_config() {
  cat <<CONF
[server]
listen = "$1"
workers = 1
[admin]
listen = "$2"
[[auth.keys]]
algorithm = "HS256"
secret_env = "$3"
[limits]
max_connections_per_ip = 0
max_connections_per_subject = 0
handshakes_per_second_per_ip = 1000000
handshake_burst_per_ip = 1000000
messages_per_second = 1000000
message_burst = 1000000
bytes_per_second = 10000000000
[timeouts]
idle_seconds = 0
ping_interval_seconds = 0
$(bench_full_route /ws "$4" "$5")
$(bench_full_route /guarded "$4" "$5")
$(for rule in card_number iban aws_access_key private_key_pem jwt password_field; do
  printf '[[routes.sensitive]]\nrule = "%s"\n' "$rule"
done)
[[routes]]
path = "/raw"
upstream = "ws://127.0.0.1:$4/"
allow_missing_origin = true
envelope = "none"
CONF
}
