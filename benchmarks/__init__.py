"""Long runs that print figures (speed, memory, robustness), each a module run as
`python -m benchmarks.NAME`; they share harness/ with the tests (docs/measurements.md)."""
