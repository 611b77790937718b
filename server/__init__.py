"""The installment credit service: credit lines, checkout, loans and their books."""
