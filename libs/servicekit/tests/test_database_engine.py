"""The engine factory keeps statement parameters out of exception text (which reaches logs)."""

from uuid import uuid4

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from servicekit import ServiceSettings, create_database_engine


async def test_a_failing_statements_parameters_are_not_in_its_exception_text(
    database_url: str,
) -> None:
    value = f"secret-{uuid4().hex}"
    engine = create_database_engine(ServiceSettings(database_url=database_url))
    try:
        async with engine.connect() as connection:
            with pytest.raises(sa_exc.DBAPIError) as raised:
                await connection.execute(
                    text("SELECT * FROM no_such_table WHERE x = :v"), {"v": value}
                )
    finally:
        await engine.dispose()
    assert "no_such_table" in str(raised.value)
    assert value not in str(raised.value)
    assert value not in repr(raised.value)
