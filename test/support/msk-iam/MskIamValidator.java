/*
 * A broker-side check of MSK IAM tokens for the test broker (MSK's own check is not open source): the
 * OAUTHBEARER token must be base64url of a SigV4-presigned GET of kafka-cluster:Connect on
 * kafka.<region>.amazonaws.com, not expired, signed for the configured access key with the configured
 * secret. The same rules as test/support/sigv4-presign.ts. JAAS options: accessKeyId, secretAccessKey, region.
 */
import java.net.URI;
import java.net.URLDecoder;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import javax.security.auth.callback.Callback;
import javax.security.auth.callback.UnsupportedCallbackException;
import javax.security.auth.login.AppConfigurationEntry;
import org.apache.kafka.common.security.auth.AuthenticateCallbackHandler;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerExtensionsValidatorCallback;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerToken;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallback;

public class MskIamValidator implements AuthenticateCallbackHandler {
  private String accessKeyId;
  private String secretAccessKey;
  private String region;

  @Override
  public void configure(Map<String, ?> configs, String mechanism, List<AppConfigurationEntry> jaas) {
    Map<String, ?> options = jaas.get(0).getOptions();
    accessKeyId = (String) options.get("accessKeyId");
    secretAccessKey = (String) options.get("secretAccessKey");
    region = (String) options.get("region");
  }

  @Override
  public void handle(Callback[] callbacks) throws UnsupportedCallbackException {
    for (Callback callback : callbacks) {
      if (callback instanceof OAuthBearerValidatorCallback v) {
        try {
          v.token(validate(v.tokenValue()));
        } catch (Exception e) {
          System.out.println("MskIamValidator: refused: " + e.getMessage());
          v.error("invalid_token", null, null);
        }
      } else if (callback instanceof OAuthBearerExtensionsValidatorCallback x) {
        x.inputExtensions().map().keySet().forEach(x::valid);
      } else {
        throw new UnsupportedCallbackException(callback);
      }
    }
  }

  private OAuthBearerToken validate(String token) throws Exception {
    URI url = new URI(new String(Base64.getUrlDecoder().decode(token), StandardCharsets.UTF_8));
    String host = "kafka." + region + ".amazonaws.com";
    if (!"https".equals(url.getScheme()) || !host.equals(url.getHost())) throw new Exception("wrong host");
    List<String[]> params = new ArrayList<>();
    String signature = null;
    String action = null, algorithm = null, credential = null, amzDate = null, expires = null, headers = null;
    for (String pair : url.getRawQuery().split("&")) {
      int eq = pair.indexOf('=');
      String k = URLDecoder.decode(pair.substring(0, eq), StandardCharsets.UTF_8);
      String v = URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8);
      switch (k) {
        case "X-Amz-Signature" -> signature = v;
        case "User-Agent" -> {} // added after signing
        default -> params.add(new String[] {encode(k), encode(v)});
      }
      if (k.equals("Action")) action = v;
      if (k.equals("X-Amz-Algorithm")) algorithm = v;
      if (k.equals("X-Amz-Credential")) credential = v;
      if (k.equals("X-Amz-Date")) amzDate = v;
      if (k.equals("X-Amz-Expires")) expires = v;
      if (k.equals("X-Amz-SignedHeaders")) headers = v;
    }
    if (!"kafka-cluster:Connect".equals(action)) throw new Exception("not kafka-cluster:Connect");
    if (!"AWS4-HMAC-SHA256".equals(algorithm) || !"host".equals(headers)) throw new Exception("not SigV4");
    String[] scope = credential == null ? new String[0] : credential.split("/");
    if (scope.length != 5 || !scope[0].equals(accessKeyId) || !scope[2].equals(region)
        || !scope[3].equals("kafka-cluster") || !scope[4].equals("aws4_request"))
      throw new Exception("wrong credential scope");
    long signedAt = LocalDateTime.parse(amzDate, DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'"))
        .toInstant(ZoneOffset.UTC).toEpochMilli();
    long expiresAt = signedAt + Long.parseLong(expires) * 1000;
    long now = System.currentTimeMillis();
    if (now > expiresAt || signedAt > now + 300_000) throw new Exception("expired or not yet valid");

    params.sort((a, b) -> a[0].equals(b[0]) ? a[1].compareTo(b[1]) : a[0].compareTo(b[0]));
    List<String> query = new ArrayList<>();
    for (String[] p : params) query.add(p[0] + "=" + p[1]);
    String canonical = String.join("\n", "GET", "/", String.join("&", query), "host:" + host, "", "host", sha256(""));
    String credentialScope = scope[1] + "/" + region + "/kafka-cluster/aws4_request";
    String toSign = String.join("\n", "AWS4-HMAC-SHA256", amzDate, credentialScope, sha256(canonical));
    byte[] key = hmac(("AWS4" + secretAccessKey).getBytes(StandardCharsets.UTF_8), scope[1]);
    for (String part : new String[] {region, "kafka-cluster", "aws4_request"}) key = hmac(key, part);
    byte[] expected = hmac(key, toSign);
    if (signature == null || !MessageDigest.isEqual(expected, HexFormat.of().parseHex(signature)))
      throw new Exception("bad signature");
    final String principal = scope[0];
    final long start = signedAt;
    return new OAuthBearerToken() {
      public String value() { return token; }
      public Set<String> scope() { return Collections.emptySet(); }
      public long lifetimeMs() { return expiresAt; }
      public String principalName() { return principal; }
      public Long startTimeMs() { return start; }
    };
  }

  private static String encode(String s) {
    return URLEncoder.encode(s, StandardCharsets.UTF_8).replace("+", "%20").replace("*", "%2A").replace("%7E", "~");
  }

  private static String sha256(String s) throws Exception {
    return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
  }

  private static byte[] hmac(byte[] key, String data) throws Exception {
    Mac mac = Mac.getInstance("HmacSHA256");
    mac.init(new SecretKeySpec(key, "HmacSHA256"));
    return mac.doFinal(data.getBytes(StandardCharsets.UTF_8));
  }

  @Override
  public void close() {}
}
