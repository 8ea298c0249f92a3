// Prints how many lightweight transactions (Paxos rounds) Cassandra has counted, read over JMX
// from its own metrics: the node-wide client-request counters, and per table of one keyspace the
// Paxos prepare counter. Run with the JDK's source launcher:
//   java CasCount.java JMX_PORT [KEYSPACE]
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class CasCount {
    public static void main(String[] args) throws Exception {
        String port = args.length > 0 ? args[0] : "7199";
        JMXServiceURL url = new JMXServiceURL("service:jmx:rmi:///jndi/rmi://127.0.0.1:" + port + "/jmxrmi");
        try (JMXConnector connector = JMXConnectorFactory.connect(url)) {
            MBeanServerConnection m = connector.getMBeanServerConnection();
            for (String scope : new String[] {"CASWrite", "CASRead"}) {
                ObjectName n = new ObjectName("org.apache.cassandra.metrics:type=ClientRequest,scope=" + scope + ",name=Latency");
                System.out.println("node " + scope + " " + m.getAttribute(n, "Count"));
            }
            if (args.length > 1) {
                long total = 0;
                ObjectName pattern = new ObjectName("org.apache.cassandra.metrics:type=Table,keyspace=" + args[1] + ",name=CasPrepareLatency,*");
                for (ObjectName n : m.queryNames(pattern, null)) {
                    long count = ((Number) m.getAttribute(n, "Count")).longValue();
                    System.out.println("table " + n.getKeyProperty("scope") + " " + count);
                    total += count;
                }
                System.out.println("keyspace " + args[1] + " " + total);
            }
        }
    }
}
