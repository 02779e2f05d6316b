"""Operations: logging and metrics."""
