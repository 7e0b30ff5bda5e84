//! Small client programs the TLS tests compile and run.

/// `java Fetch.java URL`: an HTTPS GET through the JVM's default trust, exit 0 on HTTP 200.
pub const FETCH_JAVA: &str = r#"
import java.net.URL;
import javax.net.ssl.HttpsURLConnection;

public class Fetch {
    public static void main(String[] args) throws Exception {
        HttpsURLConnection c = (HttpsURLConnection) new URL(args[0]).openConnection();
        c.setConnectTimeout(30000);
        c.setReadTimeout(30000);
        int code = c.getResponseCode();
        System.out.println("HTTP " + code);
        System.exit(code == 200 ? 0 : 1);
    }
}
"#;
