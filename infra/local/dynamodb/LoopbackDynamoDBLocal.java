// Starts Amazon DynamoDB Local bound to one interface (127.0.0.1) instead of all of them.
//
// DynamoDB Local's own main class builds a Jetty Server from a port number alone, which listens
// on every interface. Our rule is that servers we start bind to loopback only, so this launcher
// builds the server exactly as DynamoDB Local does, sets the host on its Jetty connectors before
// starting it, then starts it. Compiled against the pinned jar by infra/local/install.sh.
//
// Usage: java -cp <jar>:<lib>/* LoopbackDynamoDBLocal <host> <DynamoDB Local arguments...>

import java.lang.reflect.Field;
import java.util.Arrays;

import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public final class LoopbackDynamoDBLocal {
    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: LoopbackDynamoDBLocal <host> [DynamoDB Local arguments]");
            System.exit(2);
        }
        String host = args[0];
        String[] rest = Arrays.copyOfRange(args, 1, args.length);
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(rest);
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server jetty = (Server) field.get(proxy);
        int bound = 0;
        for (Connector connector : jetty.getConnectors()) {
            if (connector instanceof ServerConnector serverConnector) {
                serverConnector.setHost(host);
                bound++;
            }
        }
        if (bound == 0) {
            System.err.println("LoopbackDynamoDBLocal: no Jetty connector found; refusing to listen on all interfaces");
            System.exit(3);
        }
        proxy.start();
        System.out.println("DynamoDB Local listening on " + host + " (" + bound + " connector(s))");
        proxy.join();
    }
}
