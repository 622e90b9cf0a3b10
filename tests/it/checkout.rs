//! The hosted checkout page: server-rendered with what the payer needs, escaped, self-contained
//! under a strict Content-Security-Policy, and a clear page for a bad link.

use depositd_core::api_key::Scope;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, both_backends};

both_backends!(the_checkout_page_shows_what_to_pay_and_loads_nothing_from_elsewhere);

async fn the_checkout_page_shows_what_to_pay_and_loads_nothing_from_elsewhere(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Checkout Shop", &Scope::ALL).await;
    let invoice: Value = app
        .create_invoice(
            &key,
            json!({"amount": "19.99", "currency": "EUR", "description": "Two <b>tickets</b>",
            "title": "<script>alert(1)</script>", "questions": ["Name on the ticket?"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = invoice["id"].as_str().unwrap();
    assert!(invoice["checkout_url"].as_str().unwrap().ends_with(&format!("/checkout/{id}")));

    let response = app.client.get(app.url(&format!("/checkout/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = response.text().await.unwrap();
    for shown in [
        "19.99 EUR",
        invoice["pay"]["amount"].as_str().unwrap(),
        invoice["pay"]["address"].as_str().unwrap(),
        invoice["pay"]["asset"].as_str().unwrap(),
        "Name on the ticket?",
        "Waiting for payment",
        "Checkout Shop", // the footer defaults to the merchant's company name
        &format!("data-token=\"{}\"", invoice["session_token"].as_str().unwrap()),
        &format!("data-signature=\"{}\"", invoice["signature"].as_str().unwrap()),
        "<svg",
        "for=\"address\"",
    ] {
        assert!(html.contains(shown), "the page shows {shown:?}");
    }
    // The merchant's text is escaped, never markup.
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;") || html.contains("&lt;script&gt;alert(1)"),
        "{html}"
    );
    assert!(!html.contains("<script>alert(1)") && !html.contains("<b>tickets</b>"));
    // Nothing from another origin: no src, href or url() with an absolute URL (the SVG's xmlns
    // is a name, not a fetch).
    for attribute in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "url(", "@import"] {
        assert!(!html.contains(attribute), "the page must not load {attribute}...: {html}");
    }
    assert_eq!(html.matches("<script").count(), 1, "one same-origin script");
    assert!(html.contains("<script src=\"/checkout/assets/checkout.js\"></script>"));

    for (path, content_type) in [
        ("/checkout/assets/checkout.js", "text/javascript; charset=utf-8"),
        ("/checkout/assets/checkout.css", "text/css; charset=utf-8"),
    ] {
        let asset = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!((asset.status().as_u16(), asset.headers()["content-type"].to_str().unwrap()), (200, content_type));
        let text = asset.text().await.unwrap();
        assert!(!text.contains("http://") && !text.contains("https://"), "{path} loads nothing from elsewhere");
    }
    // The QR code the script swaps in when a payment changes what is due: the same drawing as the
    // page's for the same link, an SVG image under the same policy; a bad option or invoice is 404.
    let qr = app.client.get(app.url(&format!("/checkout/{id}/qr?option=0&due=1"))).send().await.unwrap();
    assert_eq!((qr.status().as_u16(), qr.headers()["content-type"].to_str().unwrap()), (200, "image/svg+xml"));
    assert!(qr.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let drawing = qr.text().await.unwrap();
    let svg = drawing.split_once("?>").map(|(_, svg)| svg).unwrap();
    assert!(svg.starts_with("<svg") && html.contains(svg), "the endpoint draws the page's link: {drawing}");
    for bad in
        [format!("/checkout/{id}/qr?option=1"), format!("/checkout/{id}/qr?option=-1"), "/checkout/nope/qr".into()]
    {
        assert_eq!(app.client.get(app.url(&bad)).send().await.unwrap().status(), 404, "{bad}");
    }
    // A finished invoice shows no pay instructions.
    let cancelled = app
        .client
        .post(app.url(&format!("/api/v1/invoices/{id}/cancel")))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let html = app.client.get(app.url(&format!("/checkout/{id}"))).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("was cancelled") && html.contains("data-while-open hidden"), "{html}");
    for path in ["/checkout/not-an-id", &format!("/checkout/{}", uuid::Uuid::now_v7()), "/checkout/assets/other.js"] {
        let missing = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(missing.status(), 404, "{path}");
        assert!(missing.text().await.unwrap().contains("not valid") || path.ends_with("other.js"));
    }
}
