"""CblossError: every failed call of the service, as one exception type."""

import grpc

# google.rpc.Code number -> grpc.StatusCode (StreamLoss reports errors as
# numbers in the response, unary calls as grpc.RpcError).
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class CblossError(RuntimeError):
    """A gRPC call to cbloss failed.

    Attributes:
      code: the grpc.StatusCode (e.g. grpc.StatusCode.INVALID_ARGUMENT).
      details: the server's message, naming the field and index at fault
        (e.g. ``labels[4] = 9 is outside [0, 5)``).
    """

    def __init__(self, code, message):
        if isinstance(code, int):
            code = status_code_from_number(code)
        self.code = code
        self.details = message or ""
        super().__init__("%s: %s" % (code.name if code is not None else "UNKNOWN", self.details))

    @classmethod
    def from_rpc_error(cls, error):
        """The CblossError of a grpc.RpcError raised by a call."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details)


def status_code_from_number(number):
    """grpc.StatusCode of a google.rpc.Code number; UNKNOWN for unknown ones."""
    return _STATUS_BY_NUMBER.get(int(number), grpc.StatusCode.UNKNOWN)
