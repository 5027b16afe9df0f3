"""Schemathesis checks for the Alcubierre API: every 4xx answer carries a message."""
import schemathesis


@schemathesis.check
def error_has_message(ctx, response, case):
    if 400 <= response.status_code < 500:
        text = response.text.strip()
        assert text, f"{response.status_code} without a message"
        if response.headers.get("content-type", [""])[0].startswith("application/json"):
            body = response.json()
            assert isinstance(body, dict) and body.get("error"), f"JSON {response.status_code} without 'error': {text}"
