// Role assignments on the existing Azure OpenAI account, deployed to the account's own resource group (main.bicep
// scopes this module there): the app needs exactly two roles on that one account, and nothing else in that group.

@description('Name of the existing Azure OpenAI account in this resource group.')
param accountName string

@description('Principal id of the Function App\'s user-assigned identity.')
param appPrincipalId string

@description('The deploying developer (empty: no developer access), given the same roles to run the app locally.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param userPrincipalType string = 'User'

var accountRoles = [
  {
    id: '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd' // Cognitive Services OpenAI User
    why: 'Data plane with an Entra token: chat completions, input files and batches (create, get, cancel).'
  }
  {
    id: 'acdd72a7-3385-48ef-bd42-f606fba81ae7' // Reader
    why: 'Control plane: the job import lists the account\'s deployments through ARM.'
  }
]

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource appAccount 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in accountRoles: {
    name: guid(account.id, appPrincipalId, role.id)
    scope: account
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
      description: role.why
    }
  }
]

resource userAccount 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in accountRoles: if (!empty(userPrincipalId)) {
    name: guid(account.id, userPrincipalId, role.id)
    scope: account
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
      principalId: userPrincipalId
      principalType: userPrincipalType
      description: 'Local runs: ${role.why}'
    }
  }
]
