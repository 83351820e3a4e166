"""The grpc.health.v1 messages, HealthCheckRequest and HealthCheckResponse.

Neither Debian's grpcio nor its protobuf packages ship health.proto or its
stubs, so the two messages are declared here with descriptor_pb2, field for
field as in grpc/health/v1/health.proto, in a pool of their own (no clash
with grpcio-health-checking's stubs if those are installed too).
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto


def _health_file():
    file = descriptor_pb2.FileDescriptorProto(
        name="grpc/health/v1/health.proto", package="grpc.health.v1", syntax="proto3")
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=_FIELD.TYPE_STRING,
                      label=_FIELD.LABEL_OPTIONAL)
    response = file.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status.value.add(name=name, number=number)
    response.field.add(name="status", number=1, type=_FIELD.TYPE_ENUM,
                       type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
                       label=_FIELD.LABEL_OPTIONAL)
    return file


def _message_classes(file, names):
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    descriptors = [pool.FindMessageTypeByName("%s.%s" % (file.package, n)) for n in names]
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get_class is None:
        get_class = message_factory.MessageFactory(pool).GetPrototype
    return [get_class(d) for d in descriptors]


HealthCheckRequest, HealthCheckResponse = _message_classes(
    _health_file(), ("HealthCheckRequest", "HealthCheckResponse"))

CHECK_METHOD = "/grpc.health.v1.Health/Check"


def status_name(response):
    """"SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN" (also for a
    status number this version of health.proto does not know)."""
    values = HealthCheckResponse.DESCRIPTOR.enum_types_by_name["ServingStatus"].values_by_number
    value = values.get(response.status)
    return value.name if value is not None else "UNKNOWN"
