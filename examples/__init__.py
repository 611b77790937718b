"""Examples of calling the credit service, type-checked and run by the tests."""
