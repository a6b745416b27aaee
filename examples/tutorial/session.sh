# The library, served on localhost:8080 (FACTD_LISTEN) with FACTD_DATABASE_URL set.
H='Content-Type: application/json'

# Add two books.  The ids are the library's own.
curl -s -X POST localhost:8080/books -H "$H" -d '{"book_id": "moby-dick", "title": "Moby-Dick"}'
# {"book_id":"moby-dick","version":1,"position":"..."}
curl -s -X POST localhost:8080/books -H "$H" -d '{"book_id": "middlemarch", "title": "Middlemarch"}'
# {"book_id":"middlemarch","version":1,"position":"..."}

# Lend one.  Lending it again is refused while it is out; a bad payload names its field.
curl -s -X POST localhost:8080/books/moby-dick/lend -H "$H" -d '{"member": "ishmael"}'
# {"book_id":"moby-dick","version":2,"position":"..."}
curl -s -X POST localhost:8080/books/moby-dick/lend -H "$H" -d '{"member": "ahab"}'
# {"type":"https://factd.dev/problems/book-on-loan","title":"Book is on loan","status":409,
#  "detail":"ishmael has it","request_id":"..."}
curl -s -X POST localhost:8080/books/middlemarch/lend -H "$H" -d '{"member": 7}'
# {"type":"https://factd.dev/problems/invalid-field","title":"Invalid field","status":400,
#  "detail":"member must be a string","request_id":"...","field":"/member"}
curl -s localhost:8080/books/moby-dick
# {"book_id":"moby-dick","title":"Moby-Dick","status":"on_loan","member":"ishmael","loans":1,"version":2}

# The shelf is a projection: it follows the log, a moment behind the commands.
curl -s 'localhost:8080/books?status=on_loan'
# {"books":[{"book_id":"moby-dick","title":"Moby-Dick","status":"on_loan","member":"ishmael","loans":1}],
#  "next":null}

# Return it and lend it again: a second loan, a second receipt.
curl -s -X POST localhost:8080/books/moby-dick/return
# {"book_id":"moby-dick","version":3,"position":"..."}
curl -s -X POST localhost:8080/books/moby-dick/return
# {"type":"https://factd.dev/problems/book-not-on-loan","title":"Book is not on loan","status":409,
#  "detail":"the book is on the shelf","request_id":"..."}
curl -s -X POST localhost:8080/books/moby-dick/lend -H "$H" -d '{"member": "queequeg"}'
# {"book_id":"moby-dick","version":4,"position":"..."}

# Each loan started a loan_receipt saga, which posted a receipt through the mailroom.
curl -s 'localhost:8080/sagas?type=loan_receipt&status=completed'
# {"items":[{"correlation_key":"moby-dick/2","status":"completed","...":"..."},
#           {"correlation_key":"moby-dick/1","status":"completed","...":"..."}],"next":null}
psql "$FACTD_DATABASE_URL" -Atc 'SELECT recipient, body FROM library_mail ORDER BY mail_key'
# ishmael|You borrowed moby-dick. Please bring it back within three weeks.
# queequeg|You borrowed moby-dick. Please bring it back within three weeks.
