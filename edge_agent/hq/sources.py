"""Where an ingest worker gets the fleet's messages, and how it acknowledges them.

Both sources hand out deliveries in arrival order and acknowledge a batch only
when the worker says so (after its database commit):

* :class:`MqttSource`: paho with ``manual_ack=True`` on an MQTT 5 broker; K
  workers share the stream through a shared subscription (``$share/<group>/…``).
  Each worker holds a persistent session under a fixed slot name, so what was
  delivered to a worker that dies unacknowledged, and what the broker routes to
  its slot while it is down, is delivered again when the slot reconnects.
* :class:`AmqpSource`: pika on RabbitMQ; devices publish through the MQTT
  plugin (into ``amq.topic``), a durable quorum queue is bound to the fleet's
  topics, and K workers consume it as competing consumers. RabbitMQ requeues a
  dead consumer's unacknowledged messages for the others at once.

An acknowledgement is only sent on the connection the message came in on; a
message from an earlier connection is left for the broker to redeliver (the
database ignores the repeat).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Delivery:
    topic: str
    payload: bytes
    token: int  # MQTT packet id / AMQP delivery tag
    generation: int  # which connection it came in on
    redelivered: bool
    qos: int = 1


class MqttSource:
    def __init__(self, host: str, port: int, topic: str, group: str | None, client_id: str,
                 receive_maximum: int = 1000, session_expiry: int = 7 * 24 * 3600,
                 username: str | None = None, password: str | None = None, end_session: bool = False,
                 cafile: str | None = None, certfile: str | None = None, keyfile: str | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.host, self.port = host, port
        self.subscription = f"$share/{group}/{topic}" if group else topic
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        self.end_session = end_session
        self.generation = 0
        self.connected = False
        self.redelivered = 0
        self.ready = threading.Event()  # subscribed: from now on the group's messages reach us
        self._queue: deque[Delivery] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
        if username:
            self.client.username_pw_set(username, password)
        if cafile or certfile:
            # Verify the broker against cafile (the system CAs when only a client certificate is given).
            self.client.tls_set(ca_certs=cafile, certfile=certfile, keyfile=keyfile)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _properties(self):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        props.ReceiveMaximum = self.receive_maximum  # how many unacknowledged messages we may hold
        return props

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=False,
                                  properties=self._properties())
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("MQTT broker refused the connection: %s", reason_code)
            return
        with self._cond:
            self.generation += 1
        self.connected = True
        log.info("MQTT connected (session present: %s); subscribing %s", flags.session_present, self.subscription)
        client.subscribe(self.subscription, qos=1)

    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error("MQTT broker refused the subscription %s: %s", self.subscription, reason_codes)
            return
        self.ready.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False
        if not self._stop.is_set():
            log.warning("MQTT disconnected: %s", reason_code)

    def _on_message(self, client, userdata, message) -> None:
        delivery = Delivery(message.topic, message.payload, message.mid, self.generation, bool(message.dup),
                            message.qos)
        with self._cond:
            self._queue.append(delivery)
            self._cond.notify()

    def fetch(self, max_count: int, max_wait: float, idle: float = 0.5) -> list[Delivery]:
        """Up to ``max_count`` deliveries: returns when that many are waiting,
        ``max_wait`` seconds after the first one arrived, or empty after ``idle``."""
        deadline = time.monotonic() + idle
        first = False
        with self._cond:
            while not self._stop.is_set():
                if len(self._queue) >= max_count:
                    break
                if self._queue and not first:
                    first, deadline = True, time.monotonic() + max_wait
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                self._cond.wait(timeout)
            batch = [self._queue.popleft() for _ in range(min(max_count, len(self._queue)))]
        self.redelivered += sum(d.redelivered for d in batch)
        return batch

    def ack(self, deliveries: list[Delivery]) -> None:
        current = self.generation
        for delivery in deliveries:
            if delivery.qos > 0 and delivery.generation == current:
                self.client.ack(delivery.token, delivery.qos)

    def keep_going(self, seconds: float) -> bool:
        """Wait (paho's own thread keeps the connection alive); False once stopping."""
        return not self._stop.wait(seconds)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Disconnect. The session (and its share of the stream) stays on the broker for
        this slot's next start, unless ``end_session``: then it is unsubscribed and ended."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._stop.set()
        props = None
        if self.end_session and self.connected:
            self.client.unsubscribe(self.subscription)
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        self.client.loop_stop()


def routing_key_to_topic(routing_key: str) -> str:
    """RabbitMQ's MQTT plugin swaps '/' and '.' between topics and routing keys."""
    return routing_key.translate(str.maketrans("./", "/."))


def topic_to_binding_key(topic_filter: str) -> str:
    return topic_filter.translate(str.maketrans("/.+", "./*"))


class AmqpSource:
    def __init__(self, urls: list[str], queue: str, topic: str, prefetch: int = 1000) -> None:
        self.urls = urls
        self.queue = queue
        self.binding_key = topic_to_binding_key(topic)
        self.prefetch = prefetch
        self.generation = 0
        self.redelivered = 0
        self.connection = None
        self.channel = None
        self._buffer: deque[Delivery] = deque()
        self._stop = threading.Event()
        self._next_url = 0
        self.ready = threading.Event()  # the queue exists and is bound: devices' messages are kept

    def _params(self):
        import pika

        params = []
        ordered = self.urls[self._next_url:] + self.urls[:self._next_url]
        for url in ordered:
            p = pika.URLParameters(url)
            p.heartbeat = 30
            p.blocked_connection_timeout = 60
            p.socket_timeout = 5
            params.append(p)
        return params

    def declare(self, channel) -> None:
        # Quorum queue: replicated on the cluster's nodes with Raft, written to disk
        # before RabbitMQ confirms a publish (so before the MQTT plugin sends PUBACK).
        channel.queue_declare(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(self.queue, "amq.topic", routing_key=self.binding_key)

    def _connect(self) -> None:
        import pika

        self.connection = pika.BlockingConnection(self._params())
        self.channel = self.connection.channel()
        self.declare(self.channel)
        self.channel.basic_qos(prefetch_count=self.prefetch)
        self.generation += 1
        generation = self.generation

        def on_message(channel, method, properties, body):
            self._buffer.append(Delivery(routing_key_to_topic(method.routing_key), body, method.delivery_tag,
                                         generation, bool(method.redelivered)))

        self.channel.basic_consume(self.queue, on_message_callback=on_message, auto_ack=False)
        self.ready.set()
        log.info("AMQP connected; consuming quorum queue %s (bound to %s)", self.queue, self.binding_key)

    def _drop_connection(self) -> None:
        try:
            if self.connection is not None and self.connection.is_open:
                self.connection.close()
        except Exception:  # already broken
            pass
        self.connection = None
        self.channel = None
        self._next_url = (self._next_url + 1) % len(self.urls)

    def _pump(self, seconds: float) -> None:
        """Serve the connection for ``seconds`` (deliveries, heartbeats); reconnect if it broke."""
        import pika.exceptions

        deadline = time.monotonic() + seconds
        delay = 0.5
        while True:
            try:
                if self.connection is None or not self.connection.is_open:
                    self._connect()
                    delay = 0.5
                self.connection.process_data_events(time_limit=max(0.0, deadline - time.monotonic()))
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("AMQP connection lost (%s: %s); reconnecting", type(exc).__name__, exc)
                self._drop_connection()
                if self._stop.wait(min(delay, max(0.0, deadline - time.monotonic()))):
                    return
                delay = min(delay * 2, 5.0)
            if time.monotonic() >= deadline or self._stop.is_set():
                return

    def start(self) -> None:
        self._pump(0)

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready.is_set() and not self._stop.is_set() and time.monotonic() < deadline:
            self._pump(0.2)
        return self.ready.is_set()

    def fetch(self, max_count: int, max_wait: float, idle: float = 0.5) -> list[Delivery]:
        deadline = time.monotonic() + idle
        first = False
        while not self._stop.is_set() and len(self._buffer) < max_count:
            if self._buffer and not first:
                first, deadline = True, time.monotonic() + max_wait
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._pump(min(remaining, 0.1))
        batch = [self._buffer.popleft() for _ in range(min(max_count, len(self._buffer)))]
        self.redelivered += sum(d.redelivered for d in batch)
        return batch

    def ack(self, deliveries: list[Delivery]) -> None:
        import pika.exceptions

        current = [d for d in deliveries if d.generation == self.generation]
        if not current or self.channel is None:
            return
        try:
            # Deliveries are handed out in order, so the batch is a prefix: one ack covers it.
            self.channel.basic_ack(delivery_tag=max(d.token for d in current), multiple=True)
        except (pika.exceptions.AMQPError, OSError) as exc:
            # Not acknowledged: RabbitMQ will redeliver them; the database ignores the repeats.
            log.warning("AMQP ack failed (%s); the batch will be redelivered", exc)
            self._drop_connection()

    def keep_going(self, seconds: float) -> bool:
        self._pump(seconds)
        return not self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._drop_connection()
