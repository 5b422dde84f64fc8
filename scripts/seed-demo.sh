#!/usr/bin/env bash
# Seeds a small demo through the public APIs: a merchant with products, a customer, and orders
# in several states, printing each step. Writes ids and dev tokens to $ORDO_DEMO_ENV (default
# .tmp/demo.env). Safe to run twice (it notices the demo merchant exists and only refreshes the
# tokens).
set -euo pipefail
cd "$(dirname "$0")/.."

cmd="http://${ORDO_COMMAND_ADDR:-127.0.0.1:8080}"
qry="http://${ORDO_QUERY_ADDR:-127.0.0.1:8081}"
ordo="${ORDO_BIN:-target/release/ordo}"
demo_env="${ORDO_DEMO_ENV:-.tmp/demo.env}"
mkdir -p "$(dirname "$demo_env")"

MERCHANT_ID=6d3c7a52-0000-4000-8000-000000000001
CUSTOMER_ID=6d3c7a52-0000-4000-8000-000000000002
ADMIN_ID=6d3c7a52-0000-4000-8000-000000000003
AUDITOR_ID=6d3c7a52-0000-4000-8000-000000000004
LAMP_ID=6d3c7a52-0000-4000-8000-000000000101
MUG_ID=6d3c7a52-0000-4000-8000-000000000102
RUG_ID=6d3c7a52-0000-4000-8000-000000000103

MERCHANT_TOKEN=$("$ordo" mint-token --sub "$MERCHANT_ID" --role merchant 2>/dev/null)
CUSTOMER_TOKEN=$("$ordo" mint-token --sub "$CUSTOMER_ID" --role customer 2>/dev/null)
ADMIN_TOKEN=$("$ordo" mint-token --sub "$ADMIN_ID" --role admin 2>/dev/null)
AUDITOR_TOKEN=$("$ordo" mint-token --sub "$AUDITOR_ID" --role auditor 2>/dev/null)
cat >"$demo_env" <<ENV
MERCHANT_ID=$MERCHANT_ID
CUSTOMER_ID=$CUSTOMER_ID
LAMP_ID=$LAMP_ID
MUG_ID=$MUG_ID
RUG_ID=$RUG_ID
MERCHANT_TOKEN=$MERCHANT_TOKEN
CUSTOMER_TOKEN=$CUSTOMER_TOKEN
ADMIN_TOKEN=$ADMIN_TOKEN
AUDITOR_TOKEN=$AUDITOR_TOKEN
ENV

# post TOKEN PATH BODY -> prints the response body, fails on a non-2xx answer
post() {
  local out status
  out=$(curl -sS -w '\n%{http_code}' -X POST -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
    -d "$3" "$cmd$2")
  status=${out##*$'\n'}
  body=${out%$'\n'*}
  if [ "${status:0:1}" != "2" ]; then
    echo "POST $2 answered $status: $body" >&2
    return 1
  fi
  printf '%s' "$body"
}

status_code() {
  curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
    -d "$3" "$cmd$2"
}

created=$(status_code "$MERCHANT_TOKEN" /v1/merchants '{"name": "Lumen & Co"}')
if [ "$created" = "409" ]; then
  echo "demo data already present"
  exit 0
fi
[ "$created" = "201" ] || { echo "registering the demo merchant answered $created" >&2; exit 1; }
step() { printf '  [%d/9] %s\n' "$1" "$2"; }
step 1 "merchant Lumen & Co registered"
post "$CUSTOMER_TOKEN" /v1/customers '{"name": "Ada Lovelace", "email": "ada@example.com",
  "shipping_address": {"line1": "12 Analytical St", "city": "London", "postal_code": "N1 7AA", "country": "GB"}}' >/dev/null
step 2 "customer Ada Lovelace registered"
post "$MERCHANT_TOKEN" /v1/products "{\"id\": \"$LAMP_ID\", \"sku\": \"LAMP-01\", \"name\": \"Desk lamp\",
  \"description\": \"Brass desk lamp\", \"price\": {\"amount_minor\": 4900, \"currency\": \"EUR\"}, \"initial_stock\": 40}" >/dev/null
post "$MERCHANT_TOKEN" /v1/products "{\"id\": \"$MUG_ID\", \"sku\": \"MUG-01\", \"name\": \"Stoneware mug\",
  \"price\": {\"amount_minor\": 1500, \"currency\": \"EUR\"}, \"initial_stock\": 100}" >/dev/null
post "$MERCHANT_TOKEN" /v1/products "{\"id\": \"$RUG_ID\", \"sku\": \"RUG-01\", \"name\": \"Wool rug\",
  \"price\": {\"amount_minor\": 19900, \"currency\": \"EUR\"}, \"initial_stock\": 2}" >/dev/null
step 3 "products LAMP-01, MUG-01 and RUG-01 listed"

# place LINES_JSON -> order id
place() {
  post "$CUSTOMER_TOKEN" /v1/orders "{\"lines\": $1}" | jq -r .id
}

# wait_status ORDER STATUS: the saga confirms or rejects asynchronously; prints the wait
wait_status() {
  local started=$SECONDS
  printf '        order %s: waiting for the saga to make it %s' "${1: -8}" "$2"
  for i in $(seq 1 150); do
    s=$(curl -s -H "Authorization: Bearer $ADMIN_TOKEN" "$qry/v1/orders/$1" | jq -r '.status // empty')
    if [ "$s" = "$2" ]; then
      printf ' ... %s after %d s\n' "$2" "$((SECONDS - started))"
      return 0
    fi
    [ $((i % 25)) -eq 0 ] && printf ' ... %s s (now: %s)' "$((SECONDS - started))" "${s:-not yet visible}"
    sleep 0.2
  done
  printf '\n'
  echo "order $1 did not become $2 within 30 s (last: ${s:-not visible}); see the order-saga and projectors logs" >&2
  return 1
}

total_of() {
  curl -s -H "Authorization: Bearer $ADMIN_TOKEN" "$qry/v1/orders/$1" | jq -c .total
}

step 4 "order 1: placed, confirmed, paid, shipped and delivered"
delivered=$(place "[{\"product_id\": \"$LAMP_ID\", \"quantity\": 1}, {\"product_id\": \"$MUG_ID\", \"quantity\": 2}]")
wait_status "$delivered" confirmed
post "$CUSTOMER_TOKEN" "/v1/orders/$delivered/payment" "{\"amount\": $(total_of "$delivered"), \"payment_reference\": \"demo-pay-1\"}" >/dev/null
post "$MERCHANT_TOKEN" "/v1/orders/$delivered/shipment" '{"carrier": "DHL", "tracking_number": "DEMO123"}' >/dev/null
post "$MERCHANT_TOKEN" "/v1/orders/$delivered/delivery" '{}' >/dev/null

step 5 "order 2: placed, confirmed and paid"
paid=$(place "[{\"product_id\": \"$MUG_ID\", \"quantity\": 4}]")
wait_status "$paid" confirmed
post "$CUSTOMER_TOKEN" "/v1/orders/$paid/payment" "{\"amount\": $(total_of "$paid"), \"payment_reference\": \"demo-pay-2\"}" >/dev/null

step 6 "order 3: too many rugs, rejected"
rejected=$(place "[{\"product_id\": \"$RUG_ID\", \"quantity\": 5}]")
wait_status "$rejected" rejected

step 7 "order 4: placed, confirmed and cancelled"
cancelled=$(place "[{\"product_id\": \"$LAMP_ID\", \"quantity\": 3}]")
wait_status "$cancelled" confirmed
post "$CUSTOMER_TOKEN" "/v1/orders/$cancelled/cancellation" '{"reason": "changed my mind"}' >/dev/null

step 8 "order 5: placed and confirmed"
confirmed=$(place "[{\"product_id\": \"$RUG_ID\", \"quantity\": 1}]")
wait_status "$confirmed" confirmed
step 9 "demo ready: orders delivered, paid, rejected, cancelled and confirmed"
