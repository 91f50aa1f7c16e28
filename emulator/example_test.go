package emulator_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/pamapi"
)

// A pipeline's own test: an emulated PAM with one account and one open request, closed the way
// the operator closes it, then checked for what reached PAM.
func Example() {
	pam := emulator.New(emulator.Options{Users: map[string]string{"jen": "jen-password"}})
	srv := httptest.NewServer(pam)
	defer srv.Close()

	req := pam.AddRequest(emulator.Request{Owner: "jen", RequestedTTL: time.Hour, Status: pamapi.StatusActive})

	url := srv.URL + "/api/pamresources/pamrequests(guid'" + req.ID + "')/Close?v=1"
	post, _ := http.NewRequest(http.MethodPost, url, http.NoBody)
	post.SetBasicAuth("jen", "jen-password")
	resp, err := http.DefaultClient.Do(post)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()

	closed, _ := pam.Request(req.ID)
	attempts, successes := pam.CloseCalls(req.ID)
	fmt.Println(resp.StatusCode, closed.Status, attempts, successes)
	// Output: 200 Closed 1 1
}
