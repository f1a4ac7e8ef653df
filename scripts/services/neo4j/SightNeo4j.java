/*
 * Local Neo4j 5 Community server for the sight-ops development stack.
 *
 * Runs the real Neo4j DBMS (org.neo4j:neo4j from Maven Central) through the public
 * DatabaseManagementServiceBuilder API with the Bolt connector on a loopback address and
 * authentication ON. Started and stopped by scripts/services/neo4j.sh; not for production.
 *
 * Usage: java -cp '<lib>/*:<classes>' SightNeo4j --home DIR [--bolt HOST:PORT]
 *             [--pagecache BYTES] [--ready-file PATH]
 * The neo4j user's password comes from the NEO4J_PASSWORD environment variable (never argv).
 *
 * Lifecycle: on start the password is applied with ALTER USER on the system database unless
 * the recorded digest shows it already was ("cannot be the same" is tolerated too); then the
 * ready file is written and "SIGHT-NEO4J READY" printed. SIGTERM/SIGINT run a shutdown hook
 * that deletes the ready file and shuts the DBMS down cleanly.
 */

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.logging.Level;
import org.neo4j.logging.log4j.Log4jLogProvider;

public final class SightNeo4j {
    private SightNeo4j() {}

    private static void log(String msg) {
        System.out.println("[sight-neo4j] " + msg);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        Path home = null;
        String bolt = "127.0.0.1:7688";
        long pagecache = 64L * 1024 * 1024;
        Path readyFile = null;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String v = (i + 1 < args.length) ? args[i + 1] : null;
            switch (a) {
                case "--home": home = Path.of(v); i++; break;
                case "--bolt": bolt = v; i++; break;
                case "--pagecache": pagecache = Long.parseLong(v); i++; break;
                case "--ready-file": readyFile = Path.of(v); i++; break;
                default:
                    System.err.println("unknown argument: " + a);
                    System.exit(2);
            }
        }
        if (home == null) {
            System.err.println("--home is required");
            System.exit(2);
        }
        String password = System.getenv("NEO4J_PASSWORD");
        if (password == null || password.isEmpty()) {
            System.err.println("NEO4J_PASSWORD must be set");
            System.exit(2);
        }
        int colon = bolt.lastIndexOf(':');
        SocketAddress boltAddress =
                new SocketAddress(bolt.substring(0, colon), Integer.parseInt(bolt.substring(colon + 1)));

        Files.createDirectories(home);
        if (readyFile != null) {
            Files.deleteIfExists(readyFile);
        }

        long t0 = System.nanoTime();
        log("starting Neo4j " + neo4jVersion() + " home=" + home.toAbsolutePath() + " bolt=" + boltAddress);
        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setUserLogProvider(new Log4jLogProvider(System.out, Level.INFO))
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, boltAddress)
                .setConfig(BoltConnector.advertised_address, boltAddress)
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .setConfig(GraphDatabaseSettings.default_listen_address, new SocketAddress(boltAddress.getHostname()))
                .setConfig(GraphDatabaseSettings.default_advertised_address, new SocketAddress(boltAddress.getHostname()))
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.pagecache_memory, pagecache)
                // Small, non-preallocated transaction logs: a fresh store is ~10 MB, not ~500 MB.
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, 16L * 1024 * 1024)
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "2 files")
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                .setConfig(GraphDatabaseSettings.shutdown_transaction_end_timeout, Duration.ofSeconds(5))
                // Bolt waits 5 s + 5 s + a Netty quiet period on shutdown by default; a local
                // server should stop in about a second.
                .setConfig(BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, Duration.ofSeconds(1))
                .setConfig(BoltConnectorInternalSettings.connection_shutdown_wait_time, Duration.ofSeconds(1))
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_timeout, Duration.ofSeconds(2))
                .build();

        final Path ready = readyFile;
        final CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            log("shutdown requested; stopping Neo4j");
            try {
                if (ready != null) {
                    Files.deleteIfExists(ready);
                }
            } catch (IOException ignored) {
                // best effort
            }
            try {
                dbms.shutdown();
                log("Neo4j stopped cleanly");
            } catch (RuntimeException e) {
                log("error during shutdown: " + e);
            } finally {
                stopped.countDown();
            }
        }, "sight-neo4j-shutdown"));

        setPassword(dbms, home, password);

        if (ready != null) {
            Files.writeString(ready, ProcessHandle.current().pid() + "\n");
        }
        log(String.format("SIGHT-NEO4J READY in %.1fs (bolt://%s)", (System.nanoTime() - t0) / 1e9, boltAddress));
        stopped.await();
    }

    /**
     * Makes the neo4j user's password equal NEO4J_PASSWORD. Running Cypher on the system
     * database costs a few seconds on a cold JVM, so a SHA-256 of the applied password is kept
     * in HOME/.sight-password-sha256 and the ALTER USER is skipped when it matches.
     */
    private static void setPassword(DatabaseManagementService dbms, Path home, String password) throws Exception {
        Path marker = home.resolve(".sight-password-sha256");
        String digest = sha256(password);
        if (Files.isRegularFile(marker) && Files.readString(marker).trim().equals(digest)) {
            log("password for user neo4j already applied");
            return;
        }
        GraphDatabaseService system = dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
        try {
            system.executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED", Map.of("password", password));
            log("password for user neo4j set");
        } catch (RuntimeException e) {
            String msg = String.valueOf(e.getMessage());
            if (msg.contains("cannot be the same")) {
                log("password for user neo4j already set");
            } else {
                throw e;
            }
        }
        Files.writeString(marker, digest + "\n");
    }

    private static String sha256(String s) throws Exception {
        byte[] h = MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8));
        StringBuilder sb = new StringBuilder();
        for (byte b : h) {
            sb.append(String.format("%02x", b));
        }
        return sb.toString();
    }

    private static String neo4jVersion() {
        Package p = DatabaseManagementService.class.getPackage();
        String v = p == null ? null : p.getImplementationVersion();
        return v == null ? "5.x" : v;
    }
}
