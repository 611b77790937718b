"""A PaymentGatewayService simulator: a real gRPC server, in memory, whose processor
behaves as the instrument token (Debit, Payout) or merchant id (PayMerchant) says.

    python -m server.payment_sim --listen 127.0.0.1:50071 [--delay-ms 2000] [--state-file FILE]

The behaviour is chosen by an explicit map (--behaviour TOKEN=NAME, or
PAYMENT_SIM_BEHAVIOURS="TOKEN=NAME,..."), else by the token's last digit:

    digit  behaviour            the call answers               the stream reports
    0, 1, 9  succeeds           SUCCEEDED                      SUCCEEDED
    2      insufficient_funds   FAILED, INSUFFICIENT_FUNDS     the same
    3      instrument_invalid   FAILED, INSTRUMENT_INVALID     the same
                                (MERCHANT_INVALID for a merchant)
    4      times_out            nothing before the caller's    SUCCEEDED, DELAY after
                                deadline                       the call arrived
    5      answers_late         PENDING                        SUCCEEDED, DELAY later
    6      answers_twice        SUCCEEDED                      SUCCEEDED at once, and
                                                               again DELAY later
    7      answers_late_fails   PENDING                        FAILED, INSUFFICIENT_FUNDS,
                                                               DELAY later
    8      times_out_fails      nothing before the caller's    FAILED, INSUFFICIENT_FUNDS,
                                deadline                       DELAY after the call arrived

Any other last character: succeeds. `declined` (FAILED, DECLINED) is for the map only.
DELAY is --delay-ms (or PAYMENT_SIM_DELAY_MS), 2 s by default. A call that times out
and has no deadline of its own is answered DEADLINE_EXCEEDED after 30 s.

The behaviour applies to the first call with a key; a repeat of that call (same key,
same request) answers at once with the payment as it stands, and the same key with a
different request is ALREADY_EXISTS. Payments and events live in memory (at most
100,000 payments and the last 100,000 events). With --state-file (or
PAYMENT_SIM_STATE_FILE; `make run` uses VAR_DIR/payment_sim.json) they are written to
that JSON file and read back at start, so a restart keeps them, sequences go on, and
results still to come arrive after it; without one, a restart forgets everything and
the stream's sequence starts again at 1.
"""
