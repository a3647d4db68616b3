"""Device side: the measurement agent that runs on the edge device, its client, and vendor benchmark reports
read as measurements. Torch-free, like ``core``.
"""

from __future__ import annotations

from .agent import MAX_OUTPUT_BYTES, PROTOCOL_VERSION, create_app, device_fingerprint, parse_measure_request, serve
from .remote import AgentClient, AgentError, OutputsRefused
from .vendor_logs import (
    VendorLogError,
    VendorMeasurement,
    parse_benchmark_app_json,
    parse_benchmark_model_log,
    parse_litert_benchmark_json,
    parse_litert_benchmark_log,
    read_vendor_log,
)

__all__ = [
    "MAX_OUTPUT_BYTES",
    "PROTOCOL_VERSION",
    "AgentClient",
    "AgentError",
    "OutputsRefused",
    "VendorLogError",
    "VendorMeasurement",
    "create_app",
    "device_fingerprint",
    "parse_benchmark_app_json",
    "parse_benchmark_model_log",
    "parse_litert_benchmark_json",
    "parse_litert_benchmark_log",
    "parse_measure_request",
    "read_vendor_log",
    "serve",
]
