// promql-check: the chart's Prometheus rules as Prometheus itself reads them.
//
//	promql-check rules RULES.yaml
//	    Parse the rule groups (rulefmt, as Prometheus loads a rule file, PromQL
//	    included) and print, as JSON, each rule with the metric names its
//	    expression selects. Exit 1 naming every error.
//	promql-check eval RULES.yaml SERIES.json
//	    SERIES.json is {"at": unix seconds, "series": [{"labels": {...}, "value": v}]}
//	    (the name in "__name__"). Load each series as a constant sample every 15 s
//	    for the 2 hours up to "at", and print, as JSON, every alert rule's result
//	    at "at" minus 30 minutes and at "at": the series that would be pending or
//	    firing (with the samples constant, a `for` clause changes nothing).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/tsdb"
)

type rule struct {
	Group   string   `json:"group"`
	Alert   string   `json:"alert,omitempty"`
	Record  string   `json:"record,omitempty"`
	Expr    string   `json:"expr"`
	For     string   `json:"for"`
	Metrics []string `json:"metrics"`
}

type series struct {
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

type seriesFile struct {
	At     float64  `json:"at"`
	Series []series `json:"series"`
}

var promqlParser = parser.NewParser(parser.Options{})

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func load(path string) []rule {
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, promqlParser, promslog.NewNopLogger())
	if len(errs) > 0 {
		for _, err := range errs {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	}
	var rules []rule
	for _, group := range groups.Groups {
		for _, r := range group.Rules {
			expr, err := promqlParser.ParseExpr(r.Expr)
			if err != nil {
				fail("%s: %s", r.Alert+r.Record, err)
			}
			names := map[string]bool{}
			parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
				if selector, ok := node.(*parser.VectorSelector); ok {
					for _, matcher := range selector.LabelMatchers {
						if matcher.Name == labels.MetricName && matcher.Type == labels.MatchEqual {
							names[matcher.Value] = true
						}
					}
				}
				return nil
			})
			metrics := make([]string, 0, len(names))
			for name := range names {
				metrics = append(metrics, name)
			}
			sort.Strings(metrics)
			rules = append(rules, rule{group.Name, r.Alert, r.Record, r.Expr, r.For.String(), metrics})
		}
	}
	return rules
}

func evaluate(rules []rule, seriesPath string) map[string][]string {
	raw, err := os.ReadFile(seriesPath)
	if err != nil {
		fail("%s", err)
	}
	var input seriesFile
	if err := json.Unmarshal(raw, &input); err != nil {
		fail("%s: %s", seriesPath, err)
	}
	dir, err := os.MkdirTemp("", "promql-check-")
	if err != nil {
		fail("%s", err)
	}
	defer os.RemoveAll(dir)
	db, err := tsdb.Open(dir, promslog.NewNopLogger(), nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		fail("tsdb: %s", err)
	}
	defer db.Close()
	ctx := context.Background()
	const step, span = 15 * time.Second, 2 * time.Hour
	start := time.UnixMilli(int64(input.At * 1000)).Add(-span)
	appender := db.Appender(ctx)
	for _, s := range input.Series {
		lbls := labels.FromMap(s.Labels)
		for at := time.Duration(0); at <= span; at += step {
			if _, err := appender.Append(0, lbls, start.Add(at).UnixMilli(), s.Value); err != nil {
				fail("append %s: %s", lbls, err)
			}
		}
	}
	if err := appender.Commit(); err != nil {
		fail("commit: %s", err)
	}
	engine := promql.NewEngine(promql.EngineOpts{
		Logger: promslog.NewNopLogger(), MaxSamples: 10_000_000, Timeout: time.Minute,
		LookbackDelta: 5 * time.Minute, Parser: promqlParser,
	})
	results := map[string][]string{}
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		found := []string{}
		for _, at := range []time.Duration{span - 30*time.Minute, span} {
			query, err := engine.NewInstantQuery(ctx, db, nil, r.Expr, start.Add(at))
			if err != nil {
				fail("%s: %s", r.Alert, err)
			}
			result := query.Exec(ctx)
			if result.Err != nil {
				fail("%s: %s", r.Alert, result.Err)
			}
			vector, err := result.Vector()
			if err != nil {
				fail("%s: %s", r.Alert, err)
			}
			for _, sample := range vector {
				found = append(found, fmt.Sprintf("at -%s: %s %g", span-at, sample.Metric, sample.F))
			}
			query.Close()
		}
		results[r.Alert] = found
	}
	return results
}

func main() {
	var out any
	switch {
	case len(os.Args) == 3 && os.Args[1] == "rules":
		out = load(os.Args[2])
	case len(os.Args) == 4 && os.Args[1] == "eval":
		out = evaluate(load(os.Args[2]), os.Args[3])
	default:
		fail("usage: promql-check rules RULES.yaml | promql-check eval RULES.yaml SERIES.json")
	}
	encoded, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		fail("%s", err)
	}
	fmt.Println(string(encoded))
}
