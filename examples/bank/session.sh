# factd-bank, served on localhost:8080 (FACTD_LISTEN) with FACTD_DATABASE_URL set.
H='Content-Type: application/json'

# Two accounts with ids of our own; money goes into the first.
curl -s -X POST localhost:8080/accounts -H "$H" -d '{"owner": "ada", "account_id": "11111111-1111-4111-8111-111111111111"}'
# {"account_id":"11111111-1111-4111-8111-111111111111","version":1,"position":"..."}
curl -s -X POST localhost:8080/accounts -H "$H" -d '{"owner": "grace", "account_id": "22222222-2222-4222-8222-222222222222"}'
# {"account_id":"22222222-2222-4222-8222-222222222222","version":1,"position":"..."}
curl -s -X POST localhost:8080/accounts/11111111-1111-4111-8111-111111111111/deposit -H "$H" -d '{"amount_cents": 5000}'
# {"account_id":"11111111-1111-4111-8111-111111111111","version":2,"position":"..."}
curl -s -X POST localhost:8080/accounts/11111111-1111-4111-8111-111111111111/withdraw -H "$H" -d '{"amount_cents": 9000}'
# {"type":"https://factd.dev/problems/insufficient-funds","...":"..."}

# A transfer is a saga: accepted now, completed a moment later.
curl -s -X POST localhost:8080/transfers -H "$H" -d '{"transfer_id": "33333333-3333-4333-8333-333333333333", "from_account": "11111111-1111-4111-8111-111111111111", "to_account": "22222222-2222-4222-8222-222222222222", "amount_cents": 1200}'
# {"transfer_id":"33333333-3333-4333-8333-333333333333","...":"..."}
curl -s localhost:8080/transfers/33333333-3333-4333-8333-333333333333
# {"transfer_id":"33333333-3333-4333-8333-333333333333","from_account":"11111111-1111-4111-8111-111111111111",
#  "to_account":"22222222-2222-4222-8222-222222222222","amount_cents":1200,"status":"completed","reason":null,"...":"..."}
curl -s localhost:8080/accounts/22222222-2222-4222-8222-222222222222
# {"account_id":"22222222-2222-4222-8222-222222222222","owner":"grace","status":"open","balance_cents":1200,
#  "held_cents":0,"available_cents":1200,"...":"..."}
