"""Pure domain: values, events, projection fold. No I/O, no trio, no httpx, no sqlalchemy."""
