// The topics pages (issue 13) need no script: plain links and GET forms.
