//! Every file of the JUnit corpus (`tests/fixtures/junit/`: real files from real tools, see its
//! README for where each came from) parses to the counts the file itself shows, or is refused
//! with a clear error.
//!
//! The expected counts were not produced by this parser. They were counted from each file with
//! Python's `xml.etree` by the rules in `tailrace_ingest::results::junit`'s docs
//! (`tests/fixtures/junit-oracle.py`), and every file where that count and a file's own totals or
//! tool disagree was read by hand (notes beside those lines). Columns: tests, success, failure,
//! error, skipped, flaky, attempts — tests by final result.

use std::path::PathBuf;

use tailrace_ingest::results::{parse_junit, JunitLimits};

fn corpus(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/junit").join(path)
}

fn open(path: &str) -> std::io::BufReader<std::fs::File> {
    std::io::BufReader::new(std::fs::File::open(corpus(path)).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// Mismatches found so far: every file is checked, then all mismatches are reported at once.
static MISMATCHES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn mismatch(m: String) {
    MISMATCHES.lock().unwrap_or_else(|e| e.into_inner()).push(m);
}

fn check(path: &str, want: [u64; 7]) {
    match parse_junit(open(path), &JunitLimits::default()) {
        Err(e) => mismatch(format!("{path}: refused: {e}")),
        Ok(parsed) => {
            let c = parsed.counts();
            let got = [c.tests, c.success, c.failure, c.error, c.skipped, c.flaky, c.attempts];
            if got != want {
                mismatch(format!("{path}: got {got:?}, want {want:?}; warnings: {:?}", parsed.warnings));
            }
        }
    }
}

fn refuse(path: &str, why: &str) {
    match parse_junit(open(path), &JunitLimits::default()) {
        Ok(p) => mismatch(format!("{path}: parsed ({:?}), expected a refusal saying {why:?}", p.counts())),
        Err(e) if !e.to_string().contains(why) => mismatch(format!("{path}: refused with {e:?}, expected it to say {why:?}")),
        Err(_) => {}
    }
}

#[test]
fn every_corpus_file_parses_to_the_counts_it_shows() {
    check("action-junit-report/test_results__catch2__report.xml", [1, 0, 1, 0, 0, 0, 1]);
    check("action-junit-report/test_results__container-structure__test.xml", [3, 3, 0, 0, 0, 0, 3]);
    // Truncated inside a CDATA section.
    refuse("action-junit-report/test_results__corrupt-junit__e2e-tests__corrupt__target__sf-reports__TEST-test.CorruptTest.xml", "CDATA not closed");
    check("action-junit-report/test_results__cunit__testEmpty.xml", [0, 0, 0, 0, 0, 0, 0]);
    check("action-junit-report/test_results__cunit__testFailure.xml", [4, 3, 1, 0, 0, 0, 4]);
    check("action-junit-report/test_results__flaky_retries__flaky_with_classname_file.xml", [3, 3, 0, 0, 0, 1, 5]);
    check("action-junit-report/test_results__issues__testDisabled.xml", [22, 6, 4, 2, 10, 0, 22]);
    check("action-junit-report/test_results__issues__testFailedDisabled.xml", [1, 0, 1, 0, 0, 0, 1]);
    check("action-junit-report/test_results__junit-server-test__report.xml", [3, 2, 0, 0, 1, 1, 4]);
    // Read by hand: `time="<<computed>>"` (a template placeholder; not well-formed XML 1.0, but
    // unambiguous) is read leniently with a warning; 6 cases, one failure, one skipped.
    check("action-junit-report/test_results__junit-web-test__expected.xml", [6, 4, 1, 0, 1, 0, 6]);
    check("action-junit-report/test_results__junit_flaky_failure__marathon_junit_report.xml", [1, 1, 0, 0, 0, 1, 2]);
    check("action-junit-report/test_results__marathon_tests__com.mikepenz.DummyUtilTest#test_01_dummy.xml", [1, 0, 1, 0, 0, 0, 1]);
    check("action-junit-report/test_results__maven_surefire_flaky__surefire-report.xml", [1, 1, 0, 0, 0, 1, 2]);
    check("action-junit-report/test_results__mocha__mocha.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("action-junit-report/test_results__multiple_failures__test_multiple_errors.xml", [3, 1, 0, 2, 0, 0, 3]);
    check("action-junit-report/test_results__multiple_failures__test_multiple_failures.xml", [4, 1, 2, 0, 1, 0, 4]);
    check("action-junit-report/test_results__nested__junit.xml", [5, 2, 3, 0, 0, 0, 5]);
    check("action-junit-report/test_results__nested__multi-level.xml", [3, 3, 0, 0, 0, 0, 3]);
    check("action-junit-report/test_results__nextest__basic.xml", [3, 2, 1, 0, 0, 0, 3]);
    check("action-junit-report/test_results__perl__result.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("action-junit-report/test_results__python__report.xml", [3, 1, 2, 0, 0, 0, 3]);
    check("action-junit-report/test_results__tests__email__target__surefire-reports__TEST-action.surefire.report.email.EmailAddressTest.xml", [9, 2, 2, 5, 0, 0, 9]);
    check("action-junit-report/test_results__tests__utils__target__surefire-reports__TEST-action.surefire.report.calc.StringUtilsTest.xml", [5, 2, 2, 0, 1, 0, 5]);
    check("action-junit-report/test_results__xunit__report_fl_on_f.xml", [4, 3, 1, 0, 0, 0, 4]);
    check("allure2/plugins__junit-xml-plugin__src__test__resources__junitdata__TEST-status-attribute.xml", [3, 1, 0, 0, 2, 0, 3]);
    check("allure2/plugins__junit-xml-plugin__src__test__resources__junitdata__TEST-test.CdataMessage.xml", [2, 1, 1, 0, 0, 0, 2]);
    check("allure2/plugins__junit-xml-plugin__src__test__resources__junitdata__TEST-test.PropertiesTest.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("allure2/plugins__junit-xml-plugin__src__test__resources__junitdata__TEST-test.RetryTest.xml", [1, 0, 0, 1, 0, 0, 4]);
    refuse("allure2/plugins__junit-xml-plugin__src__test__resources__junitdata__invalid.xml", "root element is <test-suite>");
    check("allure2/plugins__junit-xml-plugin__src__test__resources__junitdata__path-traversal.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("allure2/plugins__junit-xml-plugin__src__test__resources__junitdata__testsuites.xml", [3, 1, 1, 0, 1, 0, 3]);
    check("allure2/plugins__junit-xml-plugin__src__test__resources__junitdata__with-timestamp.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("allure2/plugins__junit-xml-plugin__src__test__resources__junitdata__zulu-timestamp.xml", [2, 2, 0, 0, 0, 0, 2]);
    check("analytics-cli/cli__test_fixtures__junit0_pass.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("analytics-cli/cli__test_fixtures__junit1_fail.xml", [2, 0, 2, 0, 0, 0, 2]);
    check("analytics-cli/xcresult__tests__data__test-ExpectedFailures.junit.xml", [52, 27, 25, 0, 0, 0, 52]);
    check("analytics-cli/xcresult__tests__data__test-swift-mix.junit.xml", [4, 2, 2, 0, 0, 0, 4]);
    check("analytics-cli/xcresult__tests__data__test-swift-snapshot-testing.junit.xml", [1, 0, 1, 0, 0, 0, 1]);
    check("analytics-cli/xcresult__tests__data__test4.junit.xml", [452, 450, 1, 0, 1, 0, 452]);
    // Read by hand: `&#8;` (a control character XML 1.0 forbids) is kept; 9 cases: failures on
    // lines 17, 31, 48, an error on 44, a skip on 60.
    check("dart-junitreport/tool__example.xml", [9, 4, 3, 1, 1, 0, 9]);
    check("go-junit-report/testdata__001-report.xml", [5, 2, 1, 0, 2, 0, 5]);
    check("go-junit-report/testdata__005-report.xml", [2, 2, 0, 0, 0, 0, 2]);
    check("go-junit-report/testdata__012-report.xml", [11, 6, 4, 0, 1, 0, 11]);
    check("go-junit-report/testdata__013-report.xml", [5, 2, 0, 3, 0, 0, 5]);
    check("go-junit-report/testdata__014-report.xml", [2, 0, 0, 2, 0, 0, 2]);
    check("go-junit-report/testdata__017-report.xml", [1, 0, 1, 0, 0, 0, 1]);
    check("go-junit-report/testdata__022-report.xml", [3, 3, 0, 0, 0, 0, 3]);
    check("go-junit-report/testdata__030-report.xml", [17, 8, 9, 0, 0, 0, 17]);
    check("go-junit-report/testdata__034-report.xml", [0, 0, 0, 0, 0, 0, 0]);
    check("go-junit-report/testdata__108-report.xml", [2, 1, 0, 1, 0, 0, 2]);
    check("gotestsum/internal__junitxml__testdata__junitxml-report-tc-with-attributes.golden", [1, 1, 0, 0, 0, 0, 1]);
    check("gotestsum/internal__junitxml__testdata__junitxml-report.golden", [60, 42, 13, 0, 5, 0, 60]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__JENKINS-13214__27449.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__JENKINS-30413.xml", [2, 1, 1, 0, 0, 0, 2]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__JENKINS-41134__TestSuite_second_dup_first.xml", [1, 0, 1, 0, 0, 0, 1]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__JENKINS-42438__junit-report-1.xml", [11, 8, 0, 0, 3, 0, 11]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__JENKINS-48583__TESTS-TestSuites.xml", [3, 3, 0, 0, 0, 0, 3]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__SKIPPED_MESSAGE__afterSkippedResult.xml", [1, 0, 0, 1, 0, 0, 1]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__SKIPPED_MESSAGE__skippedTestResult.xml", [1, 0, 0, 0, 1, 0, 1]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__TEST-null.xml", [1, 0, 0, 1, 0, 0, 1]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__eclipse-plugin-test-report.xml", [3366, 3366, 0, 0, 0, 0, 3366]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__gh-237__TEST-io.olamy.FlakyTest.xml", [1, 1, 0, 0, 0, 1, 3]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-1463.xml", [6, 6, 0, 0, 0, 0, 6]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-1472.xml", [2653, 2652, 1, 0, 0, 0, 2653]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-20090516.xml", [8, 5, 0, 3, 0, 0, 8]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-494.xml", [2, 1, 1, 0, 0, 0, 2]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-6700.xml", [0, 0, 0, 0, 0, 0, 0]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-bad-duration.xml", [1, 1, 0, 0, 0, 0, 2]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-empty-testcasename.xml", [1, 0, 1, 0, 0, 0, 1]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-huge.xml", [7580, 5131, 19, 0, 2430, 1, 7585]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-nested-testsuites.xml", [2, 2, 0, 0, 0, 0, 2]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-testsuite-time-attrs.xml", [8, 8, 0, 0, 0, 0, 8]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-testsuite-various-timestamps.xml", [12, 12, 0, 0, 0, 0, 12]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-time-aggregation2.xml", [3, 3, 0, 0, 0, 0, 3]);
    check("junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-with-properties.xml", [2, 1, 1, 0, 0, 0, 2]);
    // Hostile: an entity declaration outside any DOCTYPE.
    refuse("junit-plugin/src__test__resources__hudson__tasks__junit__testXxe-oob.xml", "not well-formed");
    // Hostile: external entities declared in the DOCTYPE.
    refuse("junit-plugin/src__test__resources__hudson__tasks__junit__testXxe-xxe.xml", "entity declarations are refused");
    check("junit2html/tests__junit-complex_suites.xml", [469, 469, 0, 0, 0, 0, 685]);
    check("junit2html/tests__junit-cute2.xml", [37, 33, 4, 0, 0, 0, 43]);
    check("junit2html/tests__junit-jenkins-stdout.xml", [1, 0, 1, 0, 0, 0, 1]);
    check("junit2html/tests__junit-sonobouy.xml", [705, 4, 1, 0, 700, 0, 710]);
    refuse("junit2html/tests__junit-testrun.xml", "root element is <testrun>");
    check("junit2html/tests__junit-unicode.xml", [2, 1, 1, 0, 0, 0, 2]);
    check("junit2html/tests__junit-unicode2.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("junit2html/tests__pytest-binary-names.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("launchable-cli/tests__data__ant__junitreport__TEST-com.launchable.HelloWorldTest.xml", [2, 1, 1, 0, 0, 0, 2]);
    check("launchable-cli/tests__data__ant__junitreport__TESTS-TestSuites.xml", [3, 2, 1, 0, 0, 0, 3]);
    check("launchable-cli/tests__data__bazel__bazel-testlogs__src__test__java__com__ninjinkun__mylib_test1__test.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("launchable-cli/tests__data__behave__reports__report.xml", [1, 1, 0, 0, 0, 0, 1]);
    refuse("launchable-cli/tests__data__broken_xml__broken.xml", "not an XML file");
    check("launchable-cli/tests__data__cucumber__report__TEST-features-is_it_friday_yet.xml", [6, 5, 1, 0, 0, 0, 6]);
    refuse("launchable-cli/tests__data__cucumber__report__dummy.xml", "empty");
    check("launchable-cli/tests__data__cypress__empty.xml", [0, 0, 0, 0, 0, 0, 0]);
    check("launchable-cli/tests__data__cypress__test-result.xml", [3, 3, 0, 0, 0, 0, 3]);
    check("launchable-cli/tests__data__go_test__reportv1__reportv1.xml", [9, 9, 0, 0, 0, 0, 9]);
    check("launchable-cli/tests__data__go_test__reportv2__reportv2.xml", [9, 9, 0, 0, 0, 0, 9]);
    check("launchable-cli/tests__data__googletest__output_a.xml", [3, 3, 0, 0, 0, 0, 3]);
    check("launchable-cli/tests__data__googletest__output_b.xml", [3, 3, 0, 0, 0, 0, 3]);
    check("launchable-cli/tests__data__gradle__recursion__foo__bar__reports__1.xml", [4, 4, 0, 0, 0, 0, 4]);
    check("launchable-cli/tests__data__jest__junit.xml", [10, 10, 0, 0, 0, 0, 10]);
    check("launchable-cli/tests__data__maven__reports__TEST-nested.xml", [1, 1, 0, 0, 0, 0, 1]);
    refuse("launchable-cli/tests__data__maven__reports__dummy.xml", "root element is <bogus>");
    check("launchable-cli/tests__data__minitest__TEST-Admin_UserTest_ChildlenTest.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("launchable-cli/tests__data__minitest__TEST-UserTest.xml", [1, 1, 0, 0, 0, 0, 1]);
    // Read by hand: three Playwright projects (`hostname` chromium, firefox, webkit) run the same
    // 31 tests; they are 93 tests, not retries — as the file's totals (93, 3 failed, 6 skipped) say.
    check("launchable-cli/tests__data__playwright__report.xml", [93, 84, 3, 0, 6, 0, 93]);
    check("launchable-cli/tests__data__prove__report.xml", [7, 5, 2, 0, 0, 0, 7]);
    check("launchable-cli/tests__data__pytest__report.xml", [12, 8, 4, 0, 0, 0, 12]);
    check("launchable-cli/tests__data__rspec__rspec.xml", [16, 16, 0, 0, 0, 0, 16]);
    check("launchable-cli/tests__data__vitest__report.xml", [5, 3, 2, 0, 0, 0, 5]);
    check("launchable-cli/tests__data__xctest__junit.xml", [6, 4, 2, 0, 0, 0, 9]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__bazel__suite-logs.xml", [1, 0, 0, 1, 0, 0, 1]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__empty-system-out-err.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__jest__jest-junit.xml", [2, 2, 0, 0, 0, 0, 2]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__junit.multiresult.xml", [4, 1, 1, 1, 1, 0, 4]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__minimal-attributes.xml", [4, 1, 1, 1, 1, 0, 4]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__mocha__latex-utensils.xml", [101, 101, 0, 0, 0, 0, 109]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__no-attributes.xml", [1, 0, 0, 1, 0, 0, 4]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__no-cases-but-tests.xml", [0, 0, 0, 0, 0, 0, 0]);
    refuse("publish-unit-test-result-action/python__test__files__junit-xml__non-junit.xml", "root element is <suites>");
    refuse("publish-unit-test-result-action/python__test__files__junit-xml__pytest__corrupt-xml.xml", "truncated");
    check("publish-unit-test-result-action/python__test__files__junit-xml__pytest__junit.fail.xml", [5, 3, 1, 0, 1, 0, 5]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__scalatest__TEST-uk.co.gresearch.spark.diff.DiffOptionsSuite.xml", [5, 5, 0, 0, 0, 0, 5]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__testsuite-in-testsuite.xml", [5, 5, 0, 0, 0, 0, 5]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__testsuite-root.xml", [5, 5, 0, 0, 0, 0, 5]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__tst__disabled.xml", [31, 6, 19, 1, 5, 0, 31]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__unsupported-unicode.xml", [7, 1, 2, 2, 2, 0, 7]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__with-xml-entities.xml", [4, 0, 1, 1, 2, 0, 4]);
    check("publish-unit-test-result-action/python__test__files__junit-xml__xunit__xunit.xml", [2, 2, 0, 0, 0, 0, 2]);
    // NUnit 3, not JUnit (its raw control bytes come after the root is refused).
    refuse("publish-unit-test-result-action/python__test__files__nunit__nunit3__jenkins__NUnit-issue17521.xml", "root element is <test-run>");
    refuse("publish-unit-test-result-action/python__test__files__xml__empty.xml", "empty");
    refuse("publish-unit-test-result-action/python__test__files__xml__non-xml.xml", "not an XML file");
    check("quick-junit/crates__quick-junit-tests__tests__fixtures__basic_report.xml", [8, 3, 3, 1, 1, 1, 14]);
    refuse("test-reporter/__tests____fixtures__dotnet-nunit.xml", "root element is <test-run>");
    check("test-reporter/__tests____fixtures__empty__java-junit.xml", [0, 0, 0, 0, 0, 0, 0]);
    check("test-reporter/__tests____fixtures__empty__jest-junit-empty-testsuite.xml", [0, 0, 0, 0, 0, 0, 0]);
    check("test-reporter/__tests____fixtures__empty__jest-junit.xml", [0, 0, 0, 0, 0, 0, 0]);
    check("test-reporter/__tests____fixtures__empty__phpunit-empty.xml", [0, 0, 0, 0, 0, 0, 0]);
    check("test-reporter/__tests____fixtures__external__java__TEST-org.apache.pulsar.AddMissingPatchVersionTest.xml", [1, 0, 1, 0, 0, 0, 2]);
    check("test-reporter/__tests____fixtures__external__java__empty_failures.xml", [3, 2, 1, 0, 0, 0, 3]);
    check("test-reporter/__tests____fixtures__external__java__pulsar-test-report.xml", [670, 663, 1, 0, 6, 0, 808]);
    check("test-reporter/__tests____fixtures__external__jest__jest-react-component-test-results.xml", [1, 1, 0, 0, 0, 0, 1]);
    // Read by hand: lines 969 and 972 name two different jest tests, "works with \r\n" and "works
    // with \r"; XML attribute normalisation (which etree applies) would make both "works with  "
    // and merge them as retries. Names are kept as written, so they stay two tests: 4142 + 1.
    check("test-reporter/__tests____fixtures__external__jest__jest-test-results.xml", [4143, 4111, 2, 0, 30, 0, 4239]);
    check("test-reporter/__tests____fixtures__external__phpunit__phpcheckstyle-phpunit.xml", [30, 28, 2, 0, 0, 0, 30]);
    check("test-reporter/__tests____fixtures__jest-junit-eslint.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("test-reporter/__tests____fixtures__jest-junit.xml", [6, 1, 4, 0, 1, 0, 6]);
    check("test-reporter/__tests____fixtures__junit-with-message.xml", [1, 0, 1, 0, 0, 0, 1]);
    check("test-reporter/__tests____fixtures__nette-tester__tester-v1.7-report.xml", [65, 61, 1, 0, 3, 0, 65]);
    check("test-reporter/__tests____fixtures__phpunit__phpunit-paths.xml", [6, 0, 6, 0, 0, 0, 6]);
    check("test-reporter/__tests____fixtures__phpunit__phpunit.xml", [12, 10, 2, 0, 0, 0, 12]);
    check("test-reporter/__tests____fixtures__python-xunit-pytest.xml", [10, 6, 2, 0, 2, 0, 10]);
    check("test-reporter/__tests____fixtures__python-xunit-unittest.xml", [8, 4, 1, 1, 2, 0, 8]);
    check("test-reporter/__tests____fixtures__swift-xunit.xml", [3, 2, 1, 0, 0, 0, 3]);
    // Read by hand: lines 969 and 972 name two different jest tests, "works with \r\n" and "works
    // with \r"; XML attribute normalisation (which etree applies) would make both "works with  "
    // and merge them as retries. Names are kept as written, so they stay two tests: 4142 + 1.
    check("test-reporter/__tests____fixtures__external__jest__jest-test-results.xml", [4143, 4111, 2, 0, 30, 0, 4239]);
    check("test-summary-action/test__resources__junit__01-common.xml", [6, 5, 1, 0, 0, 0, 8]);
    check("test-summary-action/test__resources__junit__02-example.xml", [29, 21, 8, 0, 0, 0, 30]);
    check("test-summary-action/test__resources__junit__03-junit.xml", [10, 4, 4, 0, 2, 0, 10]);
    check("test-summary-action/test__resources__junit__04-bazel-junit.xml", [2, 1, 0, 1, 0, 0, 2]);
    check("test-summary-action/test__resources__junit__05-empty.xml", [0, 0, 0, 0, 0, 0, 0]);
    check("test-summary-action/test__resources__junit__06-empty.xml", [0, 0, 0, 0, 0, 0, 0]);
    check("test-summary-action/test__resources__junit__08-failure-noattr-only-innertext.xml", [1, 0, 1, 0, 0, 0, 1]);
    refuse("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__ctest__testcase2__input.xml", "root element is <Site>");
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__ctest__testcase2__result.xml", [1, 0, 0, 0, 1, 0, 1]);
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__googletest__testcase1__input.xml", [3, 3, 0, 0, 0, 0, 3]);
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__googletest__testcase2__input.xml", [4, 1, 2, 0, 1, 0, 4]);
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__googletest__testcase2__result.xml", [4, 1, 2, 0, 1, 0, 4]);
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__googletest__testcase4__input.xml", [24, 18, 4, 0, 2, 0, 24]);
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__googletest__testcase4__result.xml", [24, 17, 4, 0, 3, 0, 24]);
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__junit__testcase3__input.xml", [32, 31, 0, 1, 0, 0, 32]);
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__junit__testcase4__input.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__phpunit__testcase1__input.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__phpunit__testcase5__input.xml", [1, 1, 0, 0, 0, 0, 1]);
    check("xunit-plugin/src__test__resources__org__jenkinsci__plugins__xunit__types__phpunit__testcase7__input.xml", [1, 1, 0, 0, 0, 0, 1]);
    let found = MISMATCHES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(found.is_empty(), "{} corpus files differ:\n{}", found.len(), found.join("\n"));
}
