#!/usr/bin/env python3
"""A small client of Superset's REST API for streamkpi (runs in the Superset
virtualenv, which has requests and PyYAML).

    client.py --url URL --password-file F import --bundle DIR --pg-host H --pg-port P --pg-db D
        zip the bundle kept in DIR (metadata.yaml, databases/, datasets/,
        charts/, dashboards/), point its database at H:P/D as
        streamkpi_reader (password from $STREAMKPI_READER_PASSWORD), import
        it with POST /api/v1/dashboard/import/, then store in every chart a
        query_context whose datasource is the imported dataset.

    client.py --url URL --password-file F check-role
        through SQL Lab: the database connects as streamkpi_reader, reads
        the KPI tables and is refused raw events, dimensions, sketch state.

    client.py --url URL --password-file F chart-data --out FILE
        GET /api/v1/chart/<id>/data/ for every chart of the dashboards and
        write {uuid: {"id", "name", "query", "colnames", "data"}} to FILE.
"""
import argparse
import io
import json
import os
import sys
import zipfile

import requests
import yaml

# the dashboards of the bundle (superset/gen_bundle.py DASHBOARDS)
DASHBOARD_SLUGS = ("music-streaming-kpis", "sparkify-engagement-and-churn")


class Superset:
    def __init__(self, url, password, user="admin"):
        self.url = url.rstrip("/")
        self.s = requests.Session()
        r = self.s.post(self.url + "/api/v1/security/login",
                        json={"username": user, "password": password,
                              "provider": "db", "refresh": True}, timeout=60)
        r.raise_for_status()
        self.s.headers["Authorization"] = "Bearer " + r.json()["access_token"]
        r = self.s.get(self.url + "/api/v1/security/csrf_token/", timeout=60)
        r.raise_for_status()
        self.s.headers["X-CSRFToken"] = r.json()["result"]
        self.s.headers["Referer"] = self.url + "/"

    def call(self, method, path, **kw):
        kw.setdefault("timeout", 120)
        r = self.s.request(method, self.url + path, **kw)
        if r.status_code >= 400:
            raise RuntimeError("%s %s -> %d: %s" % (method, path, r.status_code, r.text[:2000]))
        return r.json()

    def dashboard_charts(self, slug):
        dash = self.call("GET", "/api/v1/dashboard/%s" % slug)["result"]
        charts = self.call("GET", "/api/v1/dashboard/%d/charts" % dash["id"])["result"]
        return dash, charts

    def all_charts(self):
        """(dashboard, chart) of every chart on the bundle's dashboards"""
        out = []
        for slug in DASHBOARD_SLUGS:
            dash, charts = self.dashboard_charts(slug)
            out += [(dash, c) for c in charts]
        return out


def bundle_zip(bundle_dir, host, port, dbname):
    """the bundle as a zip in memory, its database pointed at host:port/dbname"""
    buf = io.BytesIO()
    root = "streamkpi_dashboard"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for top in ("metadata.yaml", "databases", "datasets", "charts", "dashboards"):
            path = os.path.join(bundle_dir, top)
            files = [path] if os.path.isfile(path) else sorted(
                os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".yaml"))
            for f in files:
                rel = os.path.relpath(f, bundle_dir)
                with open(f) as fh:
                    text = fh.read()
                if rel.startswith("databases" + os.sep):
                    doc = yaml.safe_load(text)
                    doc["sqlalchemy_uri"] = "postgresql+psycopg2://streamkpi_reader:XXXXXXXXXX@%s:%s/%s" % (
                        host, port, dbname)
                    text = yaml.safe_dump(doc, sort_keys=False)
                z.writestr(root + "/" + rel.replace(os.sep, "/"), text)
    return buf.getvalue()


def cmd_import(api, args):
    password = os.environ.get("STREAMKPI_READER_PASSWORD")
    if not password:
        sys.exit("client.py: set STREAMKPI_READER_PASSWORD")
    data = bundle_zip(args.bundle, args.pg_host, args.pg_port, args.pg_db)
    db_files = sorted("databases/" + f for f in os.listdir(os.path.join(args.bundle, "databases")))
    api.call("POST", "/api/v1/dashboard/import/",
             files={"formData": ("streamkpi_dashboard.zip", data, "application/zip")},
             data={"passwords": json.dumps({f: password for f in db_files}),
                   "overwrite": "true"})

    # an export cannot know the datasource ids of the instance it lands in
    fixed = 0
    for dash, c in api.all_charts():
        chart = api.call("GET", "/api/v1/chart/%d" % c["id"])["result"]
        params = json.loads(chart["params"])
        ds_id = int(str(params["datasource"]).split("__")[0])
        qc = json.loads(chart["query_context"])
        qc["datasource"] = {"id": ds_id, "type": "table"}
        qc["form_data"] = params
        for q in qc["queries"]:
            q.setdefault("url_params", {})
        api.call("PUT", "/api/v1/chart/%d" % c["id"],
                 json={"query_context": json.dumps(qc), "query_context_generation": True})
        fixed += 1
    print("imported dashboards %s with %d charts" % (", ".join(DASHBOARD_SLUGS), fixed))


def cmd_chart_data(api, args):
    out = {}
    for _, c in api.all_charts():
        chart = api.call("GET", "/api/v1/chart/%d" % c["id"])["result"]
        qc = json.loads(chart["query_context"])
        res = api.call("GET", "/api/v1/chart/%d/data/?format=json&type=full&force=true" % c["id"])
        r0 = res["result"][0]
        out[chart.get("uuid") or str(c["id"])] = {
            "id": c["id"], "name": chart["slice_name"], "viz_type": chart["viz_type"],
            "query": qc["queries"][0], "colnames": r0.get("colnames"),
            "data": r0["data"], "status": r0.get("status"), "error": r0.get("error")}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True, default=str)
    print("chart data of %d charts written to %s" % (len(out), args.out))


def cmd_check_role(api, args):
    """the imported database connects as streamkpi_reader, which reads the
    KPI tables and nothing else: raw events and dimensions are refused"""
    dbs = api.call("GET", "/api/v1/database/?q=(filters:!((col:database_name,opr:eq,value:streamkpi)))")["result"]
    if len(dbs) != 1:
        sys.exit("client.py: expected one database \"streamkpi\", found %d" % len(dbs))
    db_id = dbs[0]["id"]

    def run(sql):
        r = api.s.post(api.url + "/api/v1/sqllab/execute/", timeout=120,
                       json={"database_id": db_id, "sql": sql, "schema": "streamkpi",
                             "runAsync": False, "client_id": os.urandom(5).hex()})
        return r.status_code, r.json()

    failed = False
    status, body = run("SELECT current_user AS u, (SELECT count(*) FROM streamkpi.daily_genre_kpis)"
                       " + (SELECT count(*) FROM streamkpi.daily_churn) AS n")
    rows = body.get("data") or []
    if status == 200 and rows and rows[0]["u"] == "streamkpi_reader" and rows[0]["n"] > 0:
        print("ok - Superset's connection is streamkpi_reader and reads the KPI and churn tables")
    else:
        print("not ok - Superset's connection: HTTP %d %s" % (status, json.dumps(body)[:500]))
        failed = True
    for what in ("count(*) FROM streamkpi.listens", "count(*) FROM streamkpi.users",
                 "count(*) FROM streamkpi.daily_genre_users", "count(*) FROM streamkpi.app_events",
                 "first_name FROM streamkpi.sparkify_users"):
        status, body = run("SELECT %s" % what)
        if status != 200 and "permission denied" in json.dumps(body):
            print("ok - streamkpi_reader may not read %s" % what)
        else:
            print("not ok - streamkpi_reader read %s: HTTP %d %s" % (what, status, json.dumps(body)[:300]))
            failed = True
    if failed:
        sys.exit(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--password-file", required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("import")
    i.add_argument("--bundle", required=True)
    i.add_argument("--pg-host", required=True)
    i.add_argument("--pg-port", required=True)
    i.add_argument("--pg-db", required=True)
    d = sub.add_parser("chart-data")
    d.add_argument("--out", required=True)
    sub.add_parser("check-role")
    args = p.parse_args()
    with open(args.password_file) as f:
        api = Superset(args.url, f.read().strip())
    {"import": cmd_import, "chart-data": cmd_chart_data,
     "check-role": cmd_check_role}[args.cmd](api, args)


if __name__ == "__main__":
    main()
