import json
import threading
import time
from collections import Counter
from decimal import Decimal

from k2_pipelines.dev.broker import Broker
from k2_pipelines.lib.avro.codec import AvroDecoder
from k2_pipelines.lib.avro.registry import EmbeddedRegistry, unframe
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import read_recording, replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines_tests.conftest import KAFKA_LIBS, free_port
from k2_pipelines_tests.kafka_helpers import consume_all, end_offsets, unique_topics

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT"]


def test_every_frame_lands_once_with_key_schema_id_and_values(kafka_broker, tmp_path):
    session = tmp_path / "session.jsonl"
    counts = generate_session(
        session, SYMBOLS, 4_000, seed=9, faults={"gaps", "duplicates", "out_of_order", "malformed"}
    )
    assert counts["malformed"] > 0 and counts["duplicates"] > 0
    registry = EmbeddedRegistry(tmp_path / "registry.json")
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, registry, topics)
    assert replay(session, producer) == counts["frames"]
    assert producer.flush(60) == 0

    decoder = AvroDecoder(EmbeddedRegistry(tmp_path / "registry.json"))  # a consumer knows only the ids
    trades = consume_all(kafka_broker.bootstrap, topics.trades, counts["trades"])
    quotes = consume_all(kafka_broker.bootstrap, topics.quotes, counts["quotes"])
    dead = consume_all(kafka_broker.bootstrap, topics.dead_letters, counts["malformed"])
    assert (len(trades), len(quotes), len(dead)) == (counts["trades"], counts["quotes"], counts["malformed"])

    # every valid trade frame, read independently from the recording, is in the topic with the right values
    expected = Counter()
    for _, frame in read_recording(session):
        try:
            data = json.loads(frame)["data"]
        except ValueError:
            continue
        if data.get("e") == "trade" and isinstance(data.get("s"), str) and "p" in data and "." in data["p"] \
                and len(data["p"].split(".")[1]) <= 8:
            expected[(data["s"], f"BINANCE-{data['t']}", Decimal(data["p"]), Decimal(data["q"]),
                      "SELL" if data["m"] else "BUY")] += 1
    got = Counter()
    for message in trades:
        schema_id, record = decoder.decode(message.value())
        assert schema_id == unframe(message.value())[0]
        assert message.key().decode() == record["symbol"]
        got[(record["symbol"], record["trade_id"], record["price"], record["quantity"], record["side"])] += 1
    assert got == expected

    reasons = Counter(dict(m.headers())["k2.reason"].decode() for m in dead)
    assert reasons == Counter({k.split(":")[1]: v for k, v in counts.items() if k.startswith("malformed:")})
    raw_frames = {frame for _, frame in read_recording(session)}
    assert all(m.value().decode() in raw_frames for m in dead)  # dead letters keep the frame as received


def test_a_broker_outage_while_streaming_loses_nothing(tmp_path):
    broker = Broker(home=tmp_path / "broker", port=free_port(), libs=KAFKA_LIBS)
    broker.start()
    try:
        session = tmp_path / "session.jsonl"
        counts = generate_session(session, SYMBOLS, 20_000, seed=4)
        topics = unique_topics()
        producer = MarketDataProducer(broker.bootstrap, EmbeddedRegistry(tmp_path / "registry.json"), topics,
                                      buffer_messages=2_000)
        frames = list(read_recording(session))
        for received_at_us, frame in frames[:5_000]:
            producer.handle_frame(frame, received_at_us)
        assert producer.flush(60) == 0

        def stream_the_rest() -> None:
            for received_at_us, frame in frames[5_000:]:
                producer.handle_frame(frame, received_at_us)

        broker.stop()
        streamer = threading.Thread(target=stream_the_rest)
        streamer.start()
        time.sleep(3)
        assert streamer.is_alive()  # blocked on the full buffer (backpressure), not dropping
        broker.start()
        streamer.join(120)
        assert producer.flush(120) == 0
        assert producer.counts["produce_errors"] == 0 and producer.counts["backpressure_waits"] > 0
        assert end_offsets(broker.bootstrap, topics.trades) == counts["trades"]
        assert end_offsets(broker.bootstrap, topics.quotes) == counts["quotes"]
    finally:
        broker.stop()
