import dagster as dg

from k2_pipelines.lib.avro.registry import Registry, default_registry
from k2_pipelines.lib.binance.producer import Topics
from k2_pipelines.lib.drain.drain import DrainTarget, quotes_target, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import TopicReader
from k2_pipelines.settings import bootstrap_servers


class BinanceKafkaResource(dg.ConfigurableResource):
    """Where the Binance topics are: `bootstrap`, else K2_KAFKA_BOOTSTRAP_SERVERS, else K2's own broker
    (K2_KAFKA_PORT); schema ids from K2_SCHEMA_REGISTRY_URL or the embedded registry."""

    bootstrap: str | None = None
    trades_topic: str = Topics.trades
    quotes_topic: str = Topics.quotes

    def servers(self) -> str:
        return self.bootstrap or bootstrap_servers()

    def target(self, table: str) -> DrainTarget:
        return trades_target(self.trades_topic) if table == "trades" else quotes_target(self.quotes_topic)

    def reader(self, target: DrainTarget) -> TopicReader:
        return reader_for(self.servers(), target)

    def registry(self) -> Registry:
        return default_registry()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"binance_kafka": BinanceKafkaResource()})
