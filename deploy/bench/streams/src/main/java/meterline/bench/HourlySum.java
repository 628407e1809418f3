package meterline.bench;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.LongAdder;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.kstream.internals.TimeWindow;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyWindowStore;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.streams.state.TimestampedWindowStore;
import org.apache.kafka.streams.state.ValueAndTimestamp;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The Kafka Streams baseline of meterline's benchmark: an hourly windowed sum per (customer, dimension) of the
 * usage topic, exactly_once_v2, event time taken from the JSON "timestamp" field, windows of 1 h with 6 h grace.
 *
 * <p>Unlike meterline's processor it does NOT dedupe event ids and keeps no Redis checkpoint: its exactly-once
 * covers Kafka offsets + the RocksDB store changelog, not resent events.
 *
 * <p>Two topologies (--mode):
 *
 * <ul>
 *   <li>{@code papi} (default): the input is keyed by customer and so already partitioned the way a
 *       (customer, dimension) grouping needs, but the DSL cannot be told so (no markAsPartitioned in 4.4), and
 *       re-keying would add a repartition topic that meterline does not need. So a processor does what the DSL's
 *       windowed aggregate does (TimeWindows.windowsFor, grace against observed stream time, fetch + put) on a
 *       cached, changelogged persistent timestamped window store, like the DSL would materialize.
 *   <li>{@code dsl}: selectKey(customer␟dimension) → groupByKey → windowedBy → aggregate; Streams adds a
 *       repartition topic (one more produce + consume of every event, inside the transaction).
 * </ul>
 *
 * <p>Protocol with the bench (deploy/bench/bench.ts): it prints {@code STATE <new> <old> <epochMs>} on every
 * state change, {@code ERROR <message>} on a stream-thread failure; on stdin, {@code verify} prints {@code VERIFY
 * <windows> <sumMicros> <processed> <dropped> <unparsable>} (read through interactive queries) and {@code stop}
 * (or end of input) closes it, leaving the group, then prints {@code CLOSED <epochMs>}.
 */
public final class HourlySum {
  static final String STORE = "hourly-sum";
  static final char SEP = '\u001f';
  static final long MICROS = 1_000_000L;

  static final LongAdder PROCESSED = new LongAdder();
  static final LongAdder DROPPED = new LongAdder();
  static final LongAdder UNPARSABLE = new LongAdder();

  /** One usage event, as much as the sum needs. */
  record Event(String customer, String dimension, long micros, long timestampMs) {}

  static final JsonFactory JSON = new JsonFactory();

  /** Full streaming parse of the event JSON (every token is read, like JSON.parse); null when unusable. */
  static Event parse(byte[] data) {
    if (data == null) return null;
    try (JsonParser p = JSON.createParser(data)) {
      if (p.nextToken() != JsonToken.START_OBJECT) return null;
      String id = null;
      String customer = null;
      String dimension = null;
      double quantity = Double.NaN;
      long ts = Long.MIN_VALUE;
      while (p.nextToken() == JsonToken.FIELD_NAME) {
        String name = p.currentName();
        JsonToken t = p.nextToken();
        switch (name) {
          case "id" -> id = p.getText();
          case "customer" -> customer = p.getText();
          case "dimension" -> dimension = p.getText();
          case "quantity" -> quantity = t.isNumeric() ? p.getDoubleValue() : Double.NaN;
          case "timestamp" -> ts =
              t == JsonToken.VALUE_STRING
                  ? Instant.parse(p.getText()).toEpochMilli()
                  : t.isNumeric() ? p.getLongValue() : Long.MIN_VALUE;
          default -> p.skipChildren();
        }
      }
      if (id == null || customer == null || dimension == null || Double.isNaN(quantity) || ts < 0)
        return null;
      return new Event(customer, dimension, Math.round(quantity * MICROS), ts);
    } catch (Exception e) {
      return null;
    }
  }

  static final class EventDeserializer implements Deserializer<Event> {
    @Override
    public Event deserialize(String topic, byte[] data) {
      Event e = parse(data);
      if (e == null) UNPARSABLE.increment();
      return e;
    }
  }

  static final class NoSerializer implements Serializer<Event> {
    @Override
    public byte[] serialize(String topic, Event data) {
      throw new UnsupportedOperationException("events are only read");
    }
  }

  /** What the DSL's KStreamWindowAggregate does for a sum, on the same kind of store (see class comment). */
  static final class WindowSum implements Processor<String, Event, Void, Void> {
    private final TimeWindows windows;
    private TimestampedWindowStore<String, Long> store;
    private long observedStreamTime = Long.MIN_VALUE;

    WindowSum(TimeWindows windows) {
      this.windows = windows;
    }

    @Override
    public void init(ProcessorContext<Void, Void> context) {
      store = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<String, Event> record) {
      Event e = record.value();
      if (e == null) return;
      long ts = record.timestamp();
      observedStreamTime = Math.max(observedStreamTime, ts);
      long closeTime = observedStreamTime - windows.gracePeriodMs();
      String key = e.customer() + SEP + e.dimension();
      for (Map.Entry<Long, TimeWindow> w : windows.windowsFor(ts).entrySet()) {
        long start = w.getKey();
        if (w.getValue().end() <= closeTime) {
          DROPPED.increment();
          continue;
        }
        ValueAndTimestamp<Long> old = store.fetch(key, start);
        long sum = old == null ? e.micros() : old.value() + e.micros();
        long newTs = old == null ? ts : Math.max(old.timestamp(), ts);
        store.put(key, ValueAndTimestamp.make(sum, newTs), start);
      }
      PROCESSED.increment();
    }
  }

  static synchronized void say(String line) {
    System.out.println(line);
    System.out.flush();
  }

  static void usage() {
    System.err.println(
        "usage: HourlySum --bootstrap HOST:PORT --topic TOPIC --app-id ID --state-dir DIR"
            + " [--mode papi|dsl] [--threads N]");
    System.exit(2);
  }

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = new HashMap<>();
    for (int i = 0; i + 1 < argv.length; i += 2) {
      if (!argv[i].startsWith("--")) usage();
      args.put(argv[i].substring(2), argv[i + 1]);
    }
    for (String required : new String[] {"bootstrap", "topic", "app-id", "state-dir"})
      if (!args.containsKey(required)) usage();
    String mode = args.getOrDefault("mode", "papi");
    if (!mode.equals("papi") && !mode.equals("dsl")) usage();

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, args.get("app-id"));
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap"));
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    props.put(StreamsConfig.STATE_DIR_CONFIG, args.get("state-dir"));
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args.getOrDefault("threads", "1")));
    props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
    // commit.interval.ms stays at its exactly-once default (100 ms); the record cache at its default (10 MB).

    TimeWindows windows = TimeWindows.ofSizeAndGrace(Duration.ofHours(1), Duration.ofHours(6));
    Serde<Event> eventSerde = Serdes.serdeFrom(new NoSerializer(), new EventDeserializer());
    StreamsBuilder builder = new StreamsBuilder();
    KStream<String, Event> events =
        builder.stream(
            args.get("topic"),
            Consumed.with(Serdes.String(), eventSerde)
                // Event time; a negative result (unparsable event) makes Streams skip the record.
                .withTimestampExtractor(
                    (rec, partitionTime) -> rec.value() instanceof Event e ? e.timestampMs() : -1L));
    Duration retention = Duration.ofMillis(windows.size() + windows.gracePeriodMs());
    if (mode.equals("papi")) {
      builder.addStateStore(
          Stores.timestampedWindowStoreBuilder(
                  Stores.persistentTimestampedWindowStore(
                      STORE, retention, Duration.ofMillis(windows.size()), false),
                  Serdes.String(),
                  Serdes.Long())
              .withCachingEnabled());
      events.process(() -> new WindowSum(windows), STORE);
    } else {
      events
          .filter((k, v) -> v != null)
          .peek((k, v) -> PROCESSED.increment())
          .selectKey((k, v) -> v.customer() + SEP + v.dimension())
          .mapValues(Event::micros)
          .groupByKey(Grouped.with(Serdes.String(), Serdes.Long()))
          .windowedBy(windows)
          .aggregate(
              () -> 0L,
              (k, v, agg) -> agg + v,
              Materialized.<String, Long, WindowStore<Bytes, byte[]>>as(STORE)
                  .withKeySerde(Serdes.String())
                  .withValueSerde(Serdes.Long()));
    }

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    streams.setStateListener(
        (now, before) -> say("STATE " + now + " " + before + " " + System.currentTimeMillis()));
    streams.setUncaughtExceptionHandler(
        ex -> {
          say("ERROR " + String.valueOf(ex).replace('\n', ' '));
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });

    AtomicBoolean closed = new AtomicBoolean(false);
    Runnable close =
        () -> {
          if (closed.compareAndSet(false, true)) {
            streams.close(
                CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                    .withTimeout(Duration.ofSeconds(30)));
            say("CLOSED " + System.currentTimeMillis());
          }
        };
    Runtime.getRuntime().addShutdownHook(new Thread(close, "close-on-signal"));
    streams.start();

    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null) {
      line = line.trim();
      if (line.equals("stop")) break;
      if (line.equals("verify")) verify(streams);
    }
    close.run();
    System.exit(0);
  }

  /** Windows in the store and the sum over all of them, through interactive queries. */
  static void verify(KafkaStreams streams) {
    try {
      ReadOnlyWindowStore<String, ValueAndTimestamp<Long>> store =
          streams.store(
              StoreQueryParameters.fromNameAndType(STORE, QueryableStoreTypes.timestampedWindowStore()));
      long windows = 0;
      long sum = 0;
      try (KeyValueIterator<Windowed<String>, ValueAndTimestamp<Long>> it = store.all()) {
        while (it.hasNext()) {
          KeyValue<Windowed<String>, ValueAndTimestamp<Long>> kv = it.next();
          windows++;
          sum += kv.value.value();
        }
      }
      say("VERIFY " + windows + " " + sum + " " + PROCESSED.sum() + " " + DROPPED.sum() + " " + UNPARSABLE.sum());
    } catch (Exception e) {
      say("ERROR verify: " + String.valueOf(e).replace('\n', ' '));
    }
  }
}
